"""Where a new polyp may go: on free, visible mucosa, and how it is placed there at a size.

- visible mucosa: lit pixels (brightest channel > 30) in the frame's large lit areas, so that the black
  endoscope border and the text printed on it are out; less the overlay boxes endoscopes burn into the frame
  (the ScopeGuide position box of Kvasir frames, bottom left: a flat green rectangle, green 60+ levels over
  red where mucosa is always redder than green); eroded a few pixels so nothing touches their edges;
- free: visible and clear of every existing polyp widened by ``AVOID_PAD`` pixels;
- a centre is drawn among those where the outline fits: a distance transform of the free area says at once
  where its outer radius fits, and where only its inner radius does the outline is tried there;
- with probability ``CUT_PROBABILITY`` the polyp is put across the view's border instead, part of it out of
  view (real ones are in about 15 % of frames): the outline is clipped to the visible area and enlarged once
  so the part in view keeps the drawn size;
- a size that does not fit shrinks by ``SHRINK`` until it does; below ``MIN_POLYP_PIXELS`` the frame is
  skipped. The drawn and the placed size are both returned. Every choice comes from the given Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.masks.instances import Instance
from engine.masks.outlines import Outline, random_outline

LIT_LEVEL = 30
MIN_LIT_AREA = 0.01  # lit areas smaller than this share of the frame are text or glints on the black border
OVERLAY_GREEN_OVER_RED = 60
OVERLAY_MIN_GREEN = 100
OVERLAY_MIN_AREA = 0.002  # of the frame
OVERLAY_MIN_FILL = 0.5  # of its bounding rectangle: a flat box, not scattered specks
OVERLAY_PAD = 4
EDGE_MARGIN = 4  # pixels kept between a polyp and the black border or an overlay (a 9×9 erosion)
AVOID_PAD = 10  # pixels around an existing polyp's box
CUT_PROBABILITY = 0.15
CUT_DEPTH = (0.3, 0.7)  # a cut polyp's centre lies this far inside the view, in its equivalent radius
SHRINK = 0.8  # the area kept per step when a size does not fit
MIN_POLYP_PIXELS = 64
INSIDE_TRIES = 20


class NoPlace(Exception):
    """No free, visible place holds a polyp of even the smallest size."""


@dataclass
class Placement:
    mask: np.ndarray  # bool (H, W)
    size_drawn: float  # the size asked for, as a fraction of the frame
    size_placed: float  # the pixels placed over the frame's (smaller when it was shrunk to fit, or cut)
    cut: bool  # partly out of view


def overlay_boxes(frame: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Flat green boxes burnt into the frame (x0, y0, x1, y1, exclusive ends), padded by OVERLAY_PAD."""
    height, width = frame.shape[:2]
    red, green = frame[:, :, 0].astype(np.int16), frame[:, :, 1].astype(np.int16)
    overlay = ((green - red > OVERLAY_GREEN_OVER_RED) & (green > OVERLAY_MIN_GREEN)).astype(np.uint8)
    overlay = cv2.morphologyEx(overlay, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(overlay, connectivity=8)
    boxes = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area >= OVERLAY_MIN_AREA * height * width and area >= OVERLAY_MIN_FILL * w * h:
            boxes.append((max(0, x - OVERLAY_PAD), max(0, y - OVERLAY_PAD),
                          min(width, x + w + OVERLAY_PAD), min(height, y + h + OVERLAY_PAD)))
    return boxes


def visible_mucosa(frame: np.ndarray) -> np.ndarray:
    """Where mucosa is seen: the large lit areas less overlay boxes, EDGE_MARGIN pixels inside their edges."""
    height, width = frame.shape[:2]
    lit = (frame.max(axis=2) > LIT_LEVEL).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    large = [label for label in range(1, count) if stats[label, cv2.CC_STAT_AREA] >= MIN_LIT_AREA * height * width]
    visible = np.isin(labels, large).astype(np.uint8)
    for x0, y0, x1, y1 in overlay_boxes(frame):
        visible[y0:y1, x0:x1] = 0
    kernel = np.ones((2 * EDGE_MARGIN + 1, 2 * EDGE_MARGIN + 1), np.uint8)
    return cv2.erode(visible, kernel, borderValue=0).astype(bool)


def polyp_free(avoid: list[Instance], height: int, width: int) -> np.ndarray:
    """Everywhere but the existing polyps (their outlines, or boxes where only a box is known) widened by
    AVOID_PAD pixels."""
    blocked = np.zeros((height, width), np.uint8)
    for instance in avoid:
        blocked |= instance.raster(height, width).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * AVOID_PAD + 1, 2 * AVOID_PAD + 1))
    return ~cv2.dilate(blocked, kernel).astype(bool)


def _distance(inside: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel not `inside` (0 outside)."""
    return cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)


def _pick(candidates: np.ndarray, rng: np.random.Generator) -> tuple[float, float] | None:
    """A random pixel (x, y) among the True ones, or None."""
    flat = np.flatnonzero(candidates)
    if flat.size == 0:
        return None
    row, col = divmod(int(flat[rng.integers(flat.size)]), candidates.shape[1])
    return float(col), float(row)


def _place_inside(outline: Outline, free: np.ndarray, clearance: np.ndarray, rng) -> np.ndarray | None:
    """The outline wholly in the free area: where the outer radius fits, else tried where the inner one does."""
    height, width = free.shape
    centre = _pick(clearance >= outline.outer_radius + 1, rng)
    if centre is not None:
        return outline.raster(centre, height, width)
    maybe = clearance >= outline.inner_radius
    if not maybe.any():
        return None
    # Random tries where the inner radius fits, then the roomiest place.
    row, col = np.unravel_index(int(np.argmax(clearance)), clearance.shape)
    centres = [_pick(maybe, rng) for _ in range(INSIDE_TRIES)] + [(float(col), float(row))]
    for centre in centres:
        mask = outline.raster(centre, height, width)
        if not (mask & ~free).any():
            return mask
    return None


def _place_cut(outline: Outline, visible: np.ndarray, view_depth: np.ndarray, polyp_clearance: np.ndarray,
               rng) -> np.ndarray | None:
    """The outline across the view's border, clipped to it, enlarged once so the part in view keeps its area."""
    height, width = visible.shape
    radius = np.sqrt(outline.area / np.pi)
    near_border = (view_depth >= CUT_DEPTH[0] * radius) & (view_depth <= CUT_DEPTH[1] * radius)
    centre = _pick(near_border & (polyp_clearance >= outline.outer_radius + 1), rng)
    if centre is None:
        return None
    seen = outline.raster(centre, height, width) & visible
    if seen.sum() < MIN_POLYP_PIXELS:
        return None
    enlarged = outline.scaled(outline.area * outline.area / seen.sum())
    mask = enlarged.raster(centre, height, width) & visible
    if (polyp_clearance[mask] < 1).any():
        return None
    return mask


def place_polyp(frame: np.ndarray, avoid: list[Instance], size: float, rng: np.random.Generator) -> Placement:
    """A polyp outline of `size` (fraction of the frame) on free, visible mucosa; NoPlace when none fits."""
    height, width = frame.shape[:2]
    visible = visible_mucosa(frame)
    clear_of_polyps = polyp_free(avoid, height, width)
    free = visible & clear_of_polyps
    clearance = _distance(free)
    cut = bool(rng.random() < CUT_PROBABILITY)
    view_depth = _distance(visible) if cut else None
    polyp_clearance = _distance(clear_of_polyps) if cut else None
    shape = random_outline(1.0, rng)
    area = size * height * width
    while area >= MIN_POLYP_PIXELS:
        outline = shape.scaled(area)
        mask = _place_cut(outline, visible, view_depth, polyp_clearance, rng) if cut else None
        placed_cut = mask is not None
        if mask is None:
            mask = _place_inside(outline, free, clearance, rng)
        if mask is not None:
            return Placement(mask, size, float(mask.sum()) / (height * width), placed_cut)
        area *= SHRINK
    raise NoPlace("no free, visible place for a polyp on this frame")
