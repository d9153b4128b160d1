"""Fitting a donor polyp to its new place: size, rotation, flip, a mild elastic warp, and the colour of the mucosa
around the place.

Geometry: one affine map about the crop's centre (flip, then rotate, then scale to the size drawn for the place)
and a smooth random displacement field (an elastic warp a few per cent of the polyp's size, so the same donor is
never pasted twice with the same outline). The mask is warped with the pixels, as a float map thresholded at one
half, so the label is exactly the pasted polyp's outline.

Colour: in CIE Lab, the donor's pixels are shifted and scaled so that its ring of surrounding mucosa takes the
mean and spread of the mucosa around the new place (Reinhard-style statistics transfer). The polyp keeps its
contrast against its own mucosa — a redder-than-mucosa polyp stays redder than the new mucosa — while the light
level and tint become the target's. The scale is clamped so a flat, uniform ring cannot blow the polyp up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

SCALE_STD_CLAMP = (0.67, 1.5)  # how far the colour match may stretch or squeeze a channel's spread
MIN_RING_PIXELS = 16


@dataclass(frozen=True)
class Fit:
    """How a donor was transformed: enough to redo it exactly."""

    scale: float  # linear factor applied to the donor crop
    angle: float  # degrees, counter-clockwise
    flip: bool  # mirrored left-right before rotating
    warp: float  # elastic displacement amplitude, as a fraction of the polyp's equivalent diameter
    warp_seed: int

    def to_json(self) -> dict:
        """Full precision (JSON keeps a float exactly): the record must redo the same pixels."""
        return asdict(self)


def draw_fit(rng: np.random.Generator, scale: float, warp: float = 0.04) -> Fit:
    """A random rotation, flip and warp seed for a given scale."""
    return Fit(scale=float(scale), angle=float(rng.uniform(0.0, 360.0)), flip=bool(rng.integers(0, 2)),
               warp=float(warp), warp_seed=int(rng.integers(0, 2**31 - 1)))


def transform(pixels: np.ndarray, mask: np.ndarray, ring: np.ndarray, fit: Fit) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pixels uint8, mask bool, ring bool, covered bool) of the donor crop after ``fit``, on a canvas just large
    enough to hold the whole transformed crop; ``covered`` marks the canvas pixels that came from the crop."""
    height, width = mask.shape
    if fit.flip:
        pixels, mask, ring = pixels[:, ::-1], mask[:, ::-1], ring[:, ::-1]
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, fit.angle, fit.scale)
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], np.float64) @ matrix.T
    out_w = int(np.ceil(corners[:, 0].max() - corners[:, 0].min()))
    out_h = int(np.ceil(corners[:, 1].max() - corners[:, 1].min()))
    matrix[:, 2] -= corners.min(axis=0)
    size = (max(out_w, 1), max(out_h, 1))
    layers = np.dstack([pixels.astype(np.float32), mask.astype(np.float32), ring.astype(np.float32),
                        np.ones((height, width), np.float32)])
    moved = cv2.warpAffine(layers, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if fit.warp > 0:
        moved = _elastic(moved, fit, float(np.sqrt(mask.sum() / np.pi) * 2 * fit.scale))
    covered = moved[..., 5] > 0.999
    out_pixels = np.clip(np.round(moved[..., :3] / np.maximum(moved[..., 5:6], 1e-6)), 0, 255).astype(np.uint8)
    out_mask = (moved[..., 3] > 0.5) & covered
    out_ring = (moved[..., 4] > 0.5) & covered & ~out_mask
    return out_pixels, out_mask, out_ring, covered


def _elastic(layers: np.ndarray, fit: Fit, diameter: float) -> np.ndarray:
    """A smooth displacement field of amplitude ``fit.warp × diameter``: random offsets on a coarse grid (about
    four cells across the polyp) interpolated bicubically — smooth at the polyp's scale, and cheap at any size."""
    height, width = layers.shape[:2]
    rng = np.random.default_rng(fit.warp_seed)
    cell = max(4.0, diameter / 4.0)
    grid = (max(2, int(np.ceil(width / cell)) + 1), max(2, int(np.ceil(height / cell)) + 1))
    amplitude = fit.warp * diameter
    fields = [cv2.resize(rng.uniform(-amplitude, amplitude, (grid[1], grid[0])).astype(np.float32), (width, height),
                         interpolation=cv2.INTER_CUBIC) for _ in range(2)]
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    return cv2.remap(layers, grid_x + fields[0], grid_y + fields[1], interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def lab_statistics(pixels: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) per Lab channel over ``where``; None when there are too few pixels to trust."""
    if int(where.sum()) < MIN_RING_PIXELS:
        return None
    lab = cv2.cvtColor(pixels.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[where]
    return lab.mean(axis=0), lab.std(axis=0)


def match_colour(pixels: np.ndarray, source_ring: np.ndarray, target: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, dict]:
    """The donor's pixels with their ring's Lab statistics mapped onto ``target`` (the statistics of the mucosa
    around the new place); unchanged when either side has too few pixels. Returns the record of what was done."""
    source = lab_statistics(pixels, source_ring)
    if source is None or target is None:
        return pixels, {"colour_match": "none (too little mucosa around the donor or the place)"}
    (source_mean, source_std), (target_mean, target_std) = source, target
    gain = np.clip(target_std / np.maximum(source_std, 1e-3), *SCALE_STD_CLAMP)
    lab = cv2.cvtColor(pixels.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    lab = (lab - source_mean) * gain + target_mean
    lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB)
    out = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    return out, {"colour_match": "lab-ring", "lab_shift": [round(float(v), 3) for v in target_mean - source_mean],
                 "lab_gain": [round(float(v), 3) for v in gain]}
