"""Is a removal's fill as light as the mucosa around it? The batch job's check of removals, in numpy.

A removal repaints a box where a polyp was. The compact model sometimes fills it with a dark, grey patch (it
continues a lumen or a fold too far): a "dark fill". ``measure_fill(image, region)`` compares the repainted region R
with the ring of mucosa around it (out to a third of R's equivalent radius; the view's black border and highlights
left out):

- darkness: median luma of R minus median luma of the ring (0: as light as its surround; a dark fill is strongly
  negative; luma = 0.299 R + 0.587 G + 0.114 B, 0–255);
- detail: the spread (robust std) of R's high-pass (luma minus a Gaussian of σ 2 px) over the ring's (1: as much fine
  texture as the surround; a soft, upscaled fill is well under 1).

``MucosaCheck`` passes a removal whose darkness is at least ``-max_darkness`` (15 luma levels by default, the
threshold tests/benchmarks/removal_quality.py calls a dark smudge). With it a removal job repaints a dark fill with the
next seed, up to its attempts (engine.judge.rejection.generate_judged), and writes one that stays dark to rejected/.
It selects among the model's own paintings; it changes no pixel. A region with too little ring or inside to measure
(at the view's border, mostly black or highlight) passes: the check cannot speak for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_MAX_DARKNESS = 15.0  # luma levels a fill may be darker than its ring
DEFAULT_ATTEMPTS = 4  # paintings per removal with the check and no --max-attempts of the job's own
REASON = "dark fill"
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_MIN_PIXELS = 100  # ring and inside pixels needed to measure


def luma(image: np.ndarray) -> np.ndarray:
    return image[..., :3].astype(np.float32) @ _LUMA


def _robust_std(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


@dataclass(frozen=True)
class FillMeasure:
    darkness: float  # median luma inside minus the ring's
    detail: float  # fine texture inside over the ring's
    area: float  # the region's share of the frame

    def to_json(self) -> dict:
        return {"darkness": round(self.darkness, 2), "detail": round(self.detail, 3), "area": round(self.area, 5)}


def mucosa_ring(region: np.ndarray, lightness: np.ndarray) -> np.ndarray:
    """The ring of visible mucosa around ``region``: within a third of its equivalent radius (at least 4 px), the
    view's black border (luma ≤ 20) and highlights (≥ 230) left out."""
    region = np.asarray(region, bool)
    radius = np.sqrt(region.sum() / np.pi)
    width = max(4, int(round(radius / 3)))
    # Euclidean distance to the region: the same ring as a dilation by a disk, in time linear in the pixels.
    distance = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, 5)
    return (distance <= width) & ~region & (lightness > 20) & (lightness < 230)


def measure_fill(image: np.ndarray, region: np.ndarray) -> FillMeasure | None:
    """Darkness and detail of the fill at ``region`` against its mucosa ring; None when either has fewer than 100
    usable pixels."""
    region = np.asarray(region, bool)
    lightness = luma(image)
    ring = mucosa_ring(region, lightness)
    inside = region & (lightness < 230)
    if ring.sum() < _MIN_PIXELS or inside.sum() < _MIN_PIXELS:
        return None
    high = lightness - cv2.GaussianBlur(lightness, (0, 0), 2.0)
    ring_detail = _robust_std(high[ring])
    return FillMeasure(float(np.median(lightness[inside]) - np.median(lightness[ring])),
                       _robust_std(high[inside]) / max(ring_detail, 1e-6), float(region.mean()))


@dataclass(frozen=True)
class MucosaCheck:
    max_darkness: float = DEFAULT_MAX_DARKNESS

    def check(self, image: np.ndarray, region: np.ndarray) -> tuple[bool, FillMeasure | None]:
        """(passes, the measure): a fill passes unless it is more than ``max_darkness`` levels darker than its ring."""
        measured = measure_fill(image, region)
        return (measured is None or measured.darkness >= -self.max_darkness), measured

    def describe(self) -> dict:
        return {"max_darkness": self.max_darkness}


def default_check() -> MucosaCheck:
    """The batch job's check: DEFAULT_MAX_DARKNESS, read when the job opens it."""
    return MucosaCheck(DEFAULT_MAX_DARKNESS)
