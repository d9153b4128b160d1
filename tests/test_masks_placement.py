"""Polyp outlines and where they go (engine.masks.outlines, engine.masks.placement): outlines reach the asked
area, placements stay on visible mucosa, off the endoscope's black border, the overlay box and existing
polyps, are the same for a seed, shrink when a size does not fit, and are sometimes cut by the view's border."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.masks.instances import instances_from_mask
from engine.masks.outlines import random_outline
from engine.masks.placement import (
    AVOID_PAD,
    EDGE_MARGIN,
    NoPlace,
    overlay_boxes,
    place_polyp,
    visible_mucosa,
)
from tests.conftest import shared_data_or_skip

HEIGHT, WIDTH = 420, 480


def endoscope_frame(overlay: bool = True) -> np.ndarray:
    """Reddish mucosa in a rounded view on black, text on the border, and a green position box bottom left."""
    rng = np.random.default_rng(0)
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    view = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.ellipse(view, (WIDTH // 2, HEIGHT // 2), (WIDTH // 2 - 20, HEIGHT // 2 - 10), 0, 0, 360, 1, -1)
    mucosa = np.stack([180 + rng.integers(-20, 20, view.shape), 90 + rng.integers(-15, 15, view.shape),
                       70 + rng.integers(-15, 15, view.shape)], axis=2)
    frame[view.astype(bool)] = mucosa[view.astype(bool)]
    cv2.putText(frame, "12/04/2012", (2, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (220, 220, 220), 1)
    if overlay:
        frame[300:400, 10:120] = (19, 163, 136)  # Kvasir's ScopeGuide box colour
        cv2.line(frame, (40, 330), (70, 380), (0, 0, 0), 2)
    return frame


def polyp_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.circle(mask, (300, 150), 50, 1, -1)
    return mask.astype(bool)


@pytest.mark.parametrize("area", [150, 800, 5000, 40000])
def test_outlines_reach_the_asked_area(area):
    rng = np.random.default_rng(area)
    for _ in range(20):
        outline = random_outline(area, rng)
        pixels = outline.raster((WIDTH / 2, HEIGHT / 2), HEIGHT, WIDTH).sum()
        assert abs(pixels / area - 1) < (0.08 if area < 500 else 0.05)
        assert 0.45 < outline.inner_radius / outline.outer_radius < 1.0  # elliptic, smooth, not a sliver


def test_outlines_vary_in_aspect_and_lobes():
    rng = np.random.default_rng(3)
    ratios = [o.inner_radius / o.outer_radius for o in (random_outline(3000, rng) for _ in range(50))]
    assert max(ratios) - min(ratios) > 0.25


def test_the_overlay_box_and_the_border_are_not_visible_mucosa():
    frame = endoscope_frame()
    (x0, y0, x1, y1), = overlay_boxes(frame)
    assert x0 <= 10 and y0 <= 300 and x1 >= 120 and y1 >= 400
    visible = visible_mucosa(frame)
    assert not visible[300:400, 10:120].any()
    assert not visible[:25, :100].any()  # the text on the black border
    lit = frame.max(axis=2) > 30
    assert not (visible & ~lit).any()
    assert visible.mean() > 0.5


def test_real_kvasir_overlay_box_is_found():
    root = shared_data_or_skip() / "polyps" / "images"
    from PIL import Image

    frame = np.asarray(Image.open(root / "cjz14qsk2wci60794un9ozwmw.jpg").convert("RGB"))
    (x0, y0, x1, y1), = overlay_boxes(frame)
    assert x0 < 40 and y0 < 400 and x1 > 240 and y1 > 540  # the green box, bottom left of a 720×576 frame
    assert not visible_mucosa(frame)[y0:y1, x0:x1].any()


def test_placements_never_touch_polyps_border_or_overlay():
    frame = endoscope_frame()
    existing = polyp_mask()
    avoid = instances_from_mask(existing, "mask")
    visible = visible_mucosa(frame)
    near = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * AVOID_PAD - 1,) * 2)
    near_polyp = cv2.dilate(existing.astype(np.uint8), near).astype(bool)
    lit_margin = cv2.erode((frame.max(axis=2) > 30).astype(np.uint8), np.ones((2 * EDGE_MARGIN - 1,) * 2, np.uint8))
    cuts = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        placement = place_polyp(frame, avoid, float(rng.uniform(0.005, 0.15)), rng)
        assert placement.mask.any()
        assert not (placement.mask & near_polyp).any()
        assert not (placement.mask & ~visible).any()
        assert not (placement.mask & ~lit_margin.astype(bool)).any()
        assert not placement.mask[296:404, 6:124].any()
        cuts += placement.cut
    assert 0 < cuts < 25  # some are partly out of view, most are not


def test_cut_polyps_reach_the_view_border_and_keep_their_size():
    frame = endoscope_frame(overlay=False)
    visible = visible_mucosa(frame)
    border = visible & ~cv2.erode(visible.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    seen = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        placement = place_polyp(frame, [], 0.03, rng)
        if placement.cut:
            seen += 1
            assert (placement.mask & border).any()
            assert abs(placement.size_placed / 0.03 - 1) < 0.25
    assert seen > 10


def test_placement_is_the_same_for_a_seed():
    frame = endoscope_frame()
    first = place_polyp(frame, [], 0.05, np.random.default_rng(9))
    again = place_polyp(frame, [], 0.05, np.random.default_rng(9))
    other = place_polyp(frame, [], 0.05, np.random.default_rng(10))
    assert np.array_equal(first.mask, again.mask) and not np.array_equal(first.mask, other.mask)


def test_a_size_that_does_not_fit_shrinks_and_says_so():
    frame = endoscope_frame()
    placement = place_polyp(frame, instances_from_mask(polyp_mask(), "mask"), 0.6, np.random.default_rng(0))
    assert placement.size_drawn == 0.6
    assert 0.005 < placement.size_placed < 0.45


def test_no_room_at_all_is_no_place():
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)  # all black
    with pytest.raises(NoPlace):
        place_polyp(frame, [], 0.05, np.random.default_rng(0))
