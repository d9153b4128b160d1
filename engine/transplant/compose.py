"""One transplant: a donor polyp fitted, placed on free mucosa of a target frame, and pasted with a soft margin.

Blending (``harmonize``):
- ``none``: the fitted donor pasted with a feathered alpha (1 on the polyp, falling to 0 over a margin of its own
  mucosa) — the copy-paste baseline (Simple Copy-Paste; Ghiasi et al. 2021);
- ``poisson``: the same paste, then gradient-domain blending over the pasted footprint (engine.pipelines.blending),
  so the seam's values come from the target frame and the donor keeps its texture;
- ``model`` (done by the caller, engine.jobs): the paste re-noised and denoised by the diffusion model over the
  footprint plus a band (SDEdit).

The label is the fitted donor's own mask, exactly (the pasted polyp's outline); every pixel outside the footprint
keeps the target frame's byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.pipelines.blending import poisson_blend
from engine.transplant.donors import RING_FRACTION, MIN_RING_PX, Donor
from engine.transplant.fitting import Fit, draw_fit, lab_statistics, match_colour, transform

HARMONIZE_MODES = ("none", "poisson", "model")
FEATHER_FRACTION = 0.12  # the soft margin's width, as a fraction of the polyp's equivalent diameter
MIN_FEATHER_PX = 3
SHRINK_STEPS = (1.0, 0.85, 0.7, 0.55, 0.4)  # when the drawn size finds no free place, try smaller


class NoPlace(Exception):
    """No free, visible place on the target frame holds this donor at any size tried."""


@dataclass
class Transplant:
    image: np.ndarray  # uint8 (H, W, 3): the target frame with the donor pasted
    label: np.ndarray  # bool (H, W): the pasted polyp's outline — its label
    footprint: np.ndarray  # bool (H, W): every pixel the paste may have changed
    record: dict = field(default_factory=dict)  # donor, fit, place, sizes, colour match, blending


def equivalent_diameter(pixels: int) -> float:
    return float(2.0 * np.sqrt(pixels / np.pi))


def soft_alpha(mask: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """1 on the polyp, falling linearly to 0 over the feather margin outside it (only where the donor crop has
    pixels)."""
    feather = max(MIN_FEATHER_PX, round(FEATHER_FRACTION * equivalent_diameter(int(mask.sum()))))
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    alpha = np.clip(1.0 - outside / float(feather), 0.0, 1.0).astype(np.float32)
    alpha[~covered] = 0.0
    return alpha


def find_place(free: np.ndarray, footprint: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """(top, left) of a position where ``footprint`` lies wholly on ``free``, drawn uniformly among the places for
    its centroid whose distance to anything not free exceeds the footprint's radius about that centroid; None when
    there is none."""
    rows, cols = np.nonzero(footprint)
    if rows.size == 0:
        return None
    centre_y, centre_x = float(rows.mean()), float(cols.mean())
    radius = float(np.sqrt(((rows - centre_y) ** 2 + (cols - centre_x) ** 2).max())) + 1.0
    padded = np.pad(free.astype(np.uint8), 1)  # the frame's edge is not free
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    candidates = np.argwhere(distance > radius)
    if candidates.size == 0:
        return None
    y, x = candidates[int(rng.integers(0, len(candidates)))]
    top, left = int(round(y - centre_y)), int(round(x - centre_x))
    height, width = free.shape
    if top < 0 or left < 0 or top + footprint.shape[0] > height or left + footprint.shape[1] > width:
        return None
    if not free[top:top + footprint.shape[0], left:left + footprint.shape[1]][footprint].all():
        return None
    return top, left


def transplant(frame: np.ndarray, free: np.ndarray, donor: Donor, area_fraction: float, rng: np.random.Generator,
               harmonize: str = "none", warp: float = 0.04, colour_match: bool = True) -> Transplant:
    """Paste ``donor`` into ``frame`` at a free place (``free``: bool map of where pasted pixels may go — visible
    mucosa away from the frame's own polyps and overlays), scaled so the polyp covers ``area_fraction`` of the frame
    (smaller when that does not fit; the record says both). ``harmonize``: "none" or "poisson" here ("model" is the
    caller's: it is "none" plus the diffusion pass). Raises NoPlace when nothing fits."""
    if harmonize not in HARMONIZE_MODES:
        raise ValueError(f"harmonize must be one of {', '.join(HARMONIZE_MODES)}, not {harmonize!r}")
    height, width = frame.shape[:2]
    base_scale = float(np.sqrt(area_fraction * height * width / max(int(donor.mask.sum()), 1)))
    for shrink in SHRINK_STEPS:
        fit = draw_fit(rng, base_scale * shrink, warp)
        pixels, mask, ring, covered = transform(donor.pixels, donor.mask, donor.ring, fit)
        if int(mask.sum()) < 16:
            continue
        alpha = soft_alpha(mask, covered)
        place = find_place(free, alpha > 0, rng)
        if place is not None:
            break
    else:
        raise NoPlace(f"no free place for a polyp of {area_fraction:.1%} of the frame (down to "
                      f"{area_fraction * SHRINK_STEPS[-1] ** 2:.1%}) on this frame")
    top, left = place
    box = (slice(top, top + mask.shape[0]), slice(left, left + mask.shape[1]))
    label = np.zeros((height, width), bool)
    label[box] = mask
    footprint = np.zeros((height, width), bool)
    footprint[box] = alpha > 0

    colour_record: dict = {"colour_match": "off"}
    if colour_match:
        ring_px = max(MIN_RING_PX, round(RING_FRACTION * equivalent_diameter(int(label.sum()))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1, 2 * ring_px + 1))
        target_ring = cv2.dilate(label.astype(np.uint8), kernel).astype(bool) & ~label & free
        pixels, colour_record = match_colour(pixels, ring, lab_statistics(frame, target_ring))

    image = frame.copy()
    region = image[box].astype(np.float32)
    blended = region * (1.0 - alpha[..., None]) + pixels.astype(np.float32) * alpha[..., None]
    image[box] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    if harmonize == "poisson":
        image = poisson_blend(frame, image, footprint)
    record = {
        "donor": donor.describe(), "fit": fit.to_json(), "place": {"top": top, "left": left},
        "size_drawn": round(float(area_fraction), 6), "size_placed": round(float(label.sum()) / (height * width), 6),
        "harmonize": harmonize, **colour_record,
    }
    return Transplant(image=image, label=label, footprint=footprint, record=record)
