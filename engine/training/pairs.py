"""Polyp-Gen's spatial-aware training pairs: where the training mask goes, for each prompt.

- "Polyp": the mask is a boundary-enhanced pseudo mask (``bpm``): a random convex polygon of 5–12 vertices
  inscribed in the polyp's bounding box, so the model learns to paint a whole lesion from a rough region, not to
  trace a given outline; ``pixel`` uses the polyp's own mask, ``box`` its bounding box.
- "Normal": a random mask of polyp-like size on a normal frame, or on a polyp frame outside every polyp box
  (never touching one), on visible mucosa (not the black endoscope border).

Boxes are (x0, y0, x1, y1) in pixels, x1/y1 exclusive.
"""

from __future__ import annotations

import cv2
import numpy as np

MASK_MODES = ("bpm", "pixel", "box")
NORMAL_SIZE_RANGE = (0.12, 0.40)  # side of a Normal region, as a fraction of the frame's shorter side
NORMAL_BOX_MARGIN = 4  # px a Normal region keeps away from every polyp box
DARK_LUMA = 50  # below: lumen or deep shadow (0-255 luma)


def convex_polygon_in_box(box: tuple[float, float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Vertices (N, 2), 5 ≤ N ≤ 12, of a convex polygon inside ``box``: points on the box's inscribed ellipse
    (pulled in by up to 15 %) at random angles with a minimum spacing, so the shape is convex and not a sliver."""
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    count = int(rng.integers(5, 13))
    # angles: evenly spaced plus jitter of under half a gap, so neighbours never cross or bunch up
    gap = 2 * np.pi / count
    angles = rng.uniform(0, 2 * np.pi) + gap * (np.arange(count) + rng.uniform(-0.35, 0.35, count))
    radii = rng.uniform(0.85, 1.0, count)
    points = np.stack([cx + np.cos(angles) * radii * rx, cy + np.sin(angles) * radii * ry], axis=1)
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2)
    return hull.astype(np.float64)


def polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return canvas.astype(bool)


def box_mask(box: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask = np.zeros((height, width), bool)
    mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    return mask


def polyp_training_mask(mode: str, box, instance_mask: np.ndarray | None, height: int, width: int,
                        rng: np.random.Generator) -> np.ndarray:
    """The mask a "Polyp" pair trains with (``bpm`` | ``pixel`` | ``box``)."""
    if mode == "bpm":
        return polygon_mask(convex_polygon_in_box(box, rng), height, width)
    if mode == "box":
        return box_mask(box, height, width)
    if mode == "pixel":
        if instance_mask is None:
            return box_mask(box, height, width)  # a box-only label: its box is all that is known
        return instance_mask.astype(bool)
    raise ValueError(f"mask mode {mode!r} is not one of {', '.join(MASK_MODES)}")


def visible_area(frame: np.ndarray) -> np.ndarray:
    """Pixels of mucosa: not the black endoscope border (brightest channel above 30) and not a green/teal
    overlay (Olympus ScopeGuide's position box: green clearly above red, which mucosa never is), eroded a little."""
    red, green = frame[..., 0].astype(np.int16), frame[..., 1].astype(np.int16)
    mucosa = (frame.max(axis=2) > 30) & ~(green > red + 30)
    return cv2.erode(mucosa.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)


def dark_area(frame: np.ndarray) -> np.ndarray:
    """Pixels dark enough to be the lumen or a deep shadow (luma below ``DARK_LUMA``), not mucosa to fill with."""
    luma = frame[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return luma < DARK_LUMA


def normal_region_box(height: int, width: int, polyp_boxes, visible: np.ndarray, rng: np.random.Generator,
                      attempts: int = 40, size_range: tuple[float, float] = NORMAL_SIZE_RANGE,
                      dark: np.ndarray | None = None, max_dark: float | None = None):
    """A box of polyp-like size (``size_range``: its side as a fraction of the frame's shorter side) clear of every
    polyp box (by ``NORMAL_BOX_MARGIN``) and ≥ 95 % on visible mucosa; with ``max_dark``, also at most that share
    of ``dark`` pixels (the lumen: a removal should teach mucosa, not a new lumen). None when the frame has no
    such place."""
    side = min(height, width)
    for _ in range(attempts):
        h = rng.uniform(*size_range) * side
        w = min(width - 2, h * rng.uniform(0.7, 1.4))
        if h >= height - 2 or w < 8:
            continue
        x0 = rng.uniform(0, width - w)
        y0 = rng.uniform(0, height - h)
        box = (x0, y0, x0 + w, y0 + h)
        if any(_overlaps(box, b, NORMAL_BOX_MARGIN) for b in polyp_boxes):
            continue
        ix0, iy0, ix1, iy1 = int(x0), int(y0), int(np.ceil(x0 + w)), int(np.ceil(y0 + h))
        if visible[iy0:iy1, ix0:ix1].mean() < 0.95:
            continue
        if max_dark is not None and dark is not None and dark[iy0:iy1, ix0:ix1].mean() > max_dark:
            continue
        return box
    return None


def _overlaps(a, b, margin: float) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])
