"""Numbers of the judge, in numpy: Dice, IoU, the frame polyp score and the verdict on a variant's region.

Definitions (p = the judge's probability map at frame size, M = p > threshold, R = the variant's labelled
region: in add mode what was generated, in remove mode where the removed polyps were):

- Dice(A, B) = 2|A∩B| / (|A| + |B|), IoU(A, B) = |A∩B| / |A∪B|; both are 1 when A and B are both empty
  (a correct "no polyp"), 0 when exactly one is.
- frame polyp score = the highest mean of p over a square window of ``PEAK_WINDOW`` of the shorter side:
  how sure the judge is that a polyp-sized blob is somewhere (a single hot pixel does not count).
- region IoU: IoU of R with the judge's components that touch R (M's 8-connected components overlapping R),
  so a carried polyp elsewhere in the frame does not lower it.
- add verdict: score = confidence = mean of p over R (1: the judge calls all of R polyp; a box region
  around an elliptic polyp reaches about π/4); found = region IoU ≥ ``FOUND_IOU``.
- remove verdict: score = 1 − (frame polyp score of p restricted to R): 1 when nothing polyp-like is left
  there; found (a polyp still found) = score < 1 − threshold.

A variant passes the judge when its score ≥ the curator's minimum (``--min-judge-score``, default 0.5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

PEAK_WINDOW = 0.04  # of the shorter side
FOUND_IOU = 0.5
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_SCORE = 0.5


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    a, b = np.asarray(pred, bool), np.asarray(target, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    a, b = np.asarray(pred, bool), np.asarray(target, bool)
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def peak_score(probability: np.ndarray, within: np.ndarray | None = None) -> float:
    """Highest window mean of p (0 outside `within`, when given); 0 for an empty `within`."""
    p = np.asarray(probability, np.float32)
    if within is not None:
        within = np.asarray(within, bool)
        if not within.any():
            return 0.0
        p = np.where(within, p, 0.0).astype(np.float32)
    side = max(1, int(round(PEAK_WINDOW * min(p.shape))))
    smoothed = cv2.blur(p, (side, side), borderType=cv2.BORDER_CONSTANT) if side > 1 else p
    if within is not None:
        smoothed = np.where(within, smoothed, 0.0)
    return float(np.clip(smoothed.max(initial=0.0), 0.0, 1.0))


def components_touching(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The union of mask's 8-connected components that overlap region."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask.copy()
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    touching = np.unique(labels[np.asarray(region, bool) & mask])
    touching = touching[touching > 0]
    return np.isin(labels, touching)


@dataclass(frozen=True)
class RegionVerdict:
    mode: str
    score: float  # agreement with what the variant claims, 0..1 (higher = the judge agrees)
    found: bool  # a polyp found at the region (add: expected; remove: not expected)
    iou: float  # region IoU (see the module docstring)
    confidence: float  # mean probability over the region
    peak: float  # frame polyp score restricted to the region
    frame_score: float  # frame polyp score of the whole frame

    def agrees(self, min_score: float) -> bool:
        return self.score >= min_score

    def to_json(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def judge_region(probability: np.ndarray, region: np.ndarray, mode: str,
                 threshold: float = DEFAULT_THRESHOLD) -> RegionVerdict:
    """The judge's verdict on one variant: does it see a polyp at the labelled region (add) or none (remove)?"""
    p = np.asarray(probability, np.float32)
    region = np.asarray(region, bool)
    if p.shape != region.shape:
        raise ValueError(f"probability map {p.shape} and region {region.shape} differ in size")
    if mode not in ("add", "remove"):
        raise ValueError(f"mode {mode!r} is not add or remove")
    mask = p > threshold
    region_iou = iou(components_touching(mask, region), region) if region.any() else 0.0
    confidence = float(p[region].mean()) if region.any() else 0.0
    peak = peak_score(p, region)
    frame = peak_score(p)
    # Scores are kept to 6 decimals: the value a variant is accepted or rejected on is the one its manifest records.
    if mode == "add":
        return RegionVerdict(mode, round(confidence, 6), bool(region_iou >= FOUND_IOU), region_iou, confidence, peak,
                             frame)
    return RegionVerdict(mode, round(1.0 - peak, 6), bool(peak > threshold), region_iou, confidence, peak, frame)
