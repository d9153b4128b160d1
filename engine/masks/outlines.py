"""Polyp outlines at a target area: an ellipse of random aspect and rotation, lobulated by a few smooth
low-frequency harmonics, as real polyps look in a frame (sessile domes, elongated or lobed ones).

The outline is star-shaped around its centre: r(θ) = ellipse(θ) · (1 + Σ_k a_k cos(k θ + φ_k)), k = 2…4,
its amplitudes small enough that it stays smooth and convex-looking; it is scaled so its area is the asked
one (A = ½ ∫ r² dθ). Rasterised with sub-pixel vertices, its pixel count is within 8 % of the area from
150 pixels on, 5 % from 500, 1 % from 20000.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ASPECT_RANGE = (0.6, 1.0)  # minor / major axis
HARMONICS = (2, 3, 4)
MAX_LOBULATION = 0.18  # the harmonics' amplitudes together: r stays within ±18 % of the ellipse's
POINTS = 180
SUBPIXEL_BITS = 4  # cv2.fillPoly's shift: vertices at 1/16 pixel
EDGE_INSET_PX = 0.5


@dataclass(frozen=True)
class Outline:
    """A closed outline around (0, 0): `offsets` are its vertices (x, y) in pixels, in order."""

    offsets: np.ndarray  # (POINTS, 2) float64
    area: float  # of the polygon, in pixels

    @property
    def inner_radius(self) -> float:
        return float(np.hypot(*self.offsets.T).min())

    @property
    def outer_radius(self) -> float:
        return float(np.hypot(*self.offsets.T).max())

    def scaled(self, area: float) -> "Outline":
        """The same shape with another area."""
        factor = float(np.sqrt(area / self.area))
        return Outline(self.offsets * factor, area)

    def raster(self, centre: tuple[float, float], height: int, width: int) -> np.ndarray:
        """The outline filled at `centre` (x, y), as a boolean (height, width) mask; parts outside are cut."""
        canvas = np.zeros((height, width), np.uint8)
        # fillPoly takes every pixel the edge touches: drawn half a pixel inside, the count matches the area.
        radii = np.hypot(*self.offsets.T)[:, None]
        inset = self.offsets * np.clip(1.0 - EDGE_INSET_PX / np.maximum(radii, 1e-9), 0.0, None)
        points = np.round((inset + np.asarray(centre)) * (1 << SUBPIXEL_BITS)).astype(np.int32)
        cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
        return canvas.astype(bool)


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def random_outline(area: float, rng: np.random.Generator) -> Outline:
    """A lobulated ellipse of `area` pixels, its aspect, rotation and lobes drawn from `rng`."""
    theta = np.linspace(0.0, 2 * np.pi, POINTS, endpoint=False)
    aspect = rng.uniform(*ASPECT_RANGE)
    rotation = rng.uniform(0.0, np.pi)
    local = theta - rotation
    ellipse = aspect / np.sqrt((aspect * np.cos(local)) ** 2 + np.sin(local) ** 2)  # major semi-axis 1
    weights = rng.uniform(0.0, 1.0, len(HARMONICS)) / np.asarray(HARMONICS)  # higher lobes weaker: smooth
    amplitudes = weights / weights.sum() * rng.uniform(0.0, MAX_LOBULATION)
    phases = rng.uniform(0.0, 2 * np.pi, len(HARMONICS))
    lobes = 1.0 + sum(a * np.cos(k * theta + p) for a, k, p in zip(amplitudes, HARMONICS, phases))
    radius = ellipse * lobes
    unit = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    return Outline(unit, polygon_area(unit)).scaled(area)
