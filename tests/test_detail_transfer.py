"""Mucosa detail for removals (engine.pipelines.detail_transfer): a fill painted at a model's working size and brought
up to the frame is smooth; the transfer gives it the fine texture of the mucosa around it, keeps its coarse light and
colour, changes nothing outside the mask, leaves out the view's black border and specular highlights as sources, and
is the same every time for the same frame and mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.pipelines.detail_transfer import detail_sigma, transfer_mucosa_detail
from engine.pipelines.framing import paste_back


def _luma(image: np.ndarray) -> np.ndarray:
    return image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _fine_spread(image: np.ndarray, where: np.ndarray) -> float:
    """Robust spread of the luma's high-pass (σ 2 px), as tests/benchmarks/removal_quality measures detail."""
    import cv2

    luma = _luma(image)
    high = luma - cv2.GaussianBlur(luma, (0, 0), 2.0)
    values = high[where]
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _textured_mucosa(height=240, width=320, seed=0) -> np.ndarray:
    """Shaded mucosa with a fine grain and thin dark 'vessels' (what a removal's surround looks like)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    shade = 150 + 30 * np.sin(xx / 60.0) + 20 * np.cos(yy / 45.0)
    grain = cv2.GaussianBlur(rng.normal(0, 14, (height, width)).astype(np.float32), (0, 0), 1.2)
    vessels = (np.abs(np.sin(xx / 9.0 + 2 * np.sin(yy / 13.0))) < 0.12) * -25.0
    luma = shade + grain + vessels
    return np.clip(np.stack([luma * 1.25, luma * 0.7, luma * 0.55], -1), 0, 255).astype(np.uint8)


def _smooth_fill(frame: np.ndarray, mask: np.ndarray, factor: int = 6) -> np.ndarray:
    """The frame with the masked region replaced by its own picture at 1/factor resolution brought back up: the
    coarse light and colour right, the fine detail gone (a compact model's fill)."""
    height, width = mask.shape
    small = Image.fromarray(frame).resize((width // factor, height // factor), Image.Resampling.BOX)
    smooth = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))
    return np.where(mask[..., None], smooth, frame)


def _box(shape, top, left, bottom, right) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def test_the_fill_gets_the_surrounds_fine_texture_and_keeps_its_light():
    frame = _textured_mucosa()
    mask = _box(frame.shape[:2], 70, 100, 170, 220)
    filled = _smooth_fill(frame, mask)
    ring = _box(frame.shape[:2], 40, 70, 200, 250) & ~mask
    before = _fine_spread(filled, mask) / _fine_spread(frame, ring)
    out = transfer_mucosa_detail(frame, filled, mask, upscale=6.0)
    after = _fine_spread(out, mask) / _fine_spread(frame, ring)
    assert before < 0.4, before  # the smooth fill is the blur the transfer is for
    assert 0.7 < after < 1.4, after
    # the coarse picture stays the fill's: mean colour within 3 levels per channel
    assert np.abs(out[mask].astype(float).mean(0) - filled[mask].astype(float).mean(0)).max() < 3.0
    assert np.array_equal(out[~mask], filled[~mask])


def test_the_same_frame_and_mask_give_the_same_bytes_and_another_mask_other_detail():
    frame = _textured_mucosa(seed=2)
    mask = _box(frame.shape[:2], 60, 90, 160, 200)
    filled = _smooth_fill(frame, mask)
    first = transfer_mucosa_detail(frame, filled, mask, 6.0)
    assert np.array_equal(first, transfer_mucosa_detail(frame, filled, mask, 6.0))
    moved = _box(frame.shape[:2], 61, 90, 160, 200)
    other = transfer_mucosa_detail(frame, _smooth_fill(frame, moved), moved, 6.0)
    assert not np.array_equal(first[mask & moved], other[mask & moved])


def test_black_border_and_highlights_are_not_copied_in():
    """Half the surround is the view's black border, spotted with white highlights elsewhere: no fill pixel comes out
    black or blown out (those blocks are not sources)."""
    frame = _textured_mucosa(seed=3)
    frame[:, :60] = 0  # the view's border
    rng = np.random.default_rng(1)
    for y, x in rng.integers((0, 60), (240, 320), size=(40, 2)):
        frame[max(0, y - 2):y + 3, max(60, x - 2):x + 3] = 255
    mask = _box(frame.shape[:2], 60, 70, 180, 200)
    filled = _smooth_fill(frame, mask)
    filled[mask] = np.clip(_smooth_fill(_textured_mucosa(seed=3), mask)[mask], 0, 255)  # the fill is lit mucosa
    out = transfer_mucosa_detail(frame, filled, mask, 6.0)
    luma = _luma(out)[mask]
    assert luma.min() > 40 and luma.max() < 245


def test_too_little_mucosa_around_leaves_the_fill_as_painted():
    frame = np.zeros((120, 160, 3), np.uint8)  # all border: nothing to copy from
    mask = _box(frame.shape[:2], 20, 20, 100, 140)
    filled = frame.copy()
    filled[mask] = (180, 110, 90)
    assert np.array_equal(transfer_mucosa_detail(frame, filled, mask, 6.0), filled)


@pytest.mark.parametrize("upscale, expected", [(1.0, 1.5), (4.0, 4.0), (20.0, 8.0)])
def test_the_detail_scale_follows_the_upscale_within_bounds(upscale, expected):
    assert detail_sigma(upscale) == expected


def test_paste_back_with_mucosa_blend_textures_the_removal_and_keeps_every_outside_byte():
    frame = _textured_mucosa(seed=5)
    mask = _box(frame.shape[:2], 60, 80, 180, 240)
    generated = np.asarray(Image.fromarray(frame).resize((40, 30)))
    as_model = generated.astype(np.float32) / 255.0  # the fill at a model's 40×30 working size
    poisson = paste_back(frame, as_model, mask, feather_px=3, blend="poisson")
    mucosa = paste_back(frame, as_model, mask, feather_px=3, blend="mucosa")
    assert np.array_equal(mucosa[~mask], frame[~mask]) and np.array_equal(poisson[~mask], frame[~mask])
    assert _fine_spread(mucosa, mask) > 2.0 * _fine_spread(poisson, mask)
