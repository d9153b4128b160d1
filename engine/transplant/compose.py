"""One transplant: a donor polyp fitted, placed on free mucosa of a target frame, and pasted with a soft margin.

Blending (``harmonize``):
- ``none``: the fitted donor pasted with a feathered alpha (1 on the polyp, falling to 0 over a margin of its own
  mucosa) — the copy-paste baseline (Simple Copy-Paste; Ghiasi et al. 2021);
- ``poisson``: seamless cloning over the footprint (engine.pipelines.blending): the donor's own pixels there are the
  guide, so it keeps its texture while the values at the footprint's edge — and, smoothly, inside — come from
  the target frame (a feathered paste would already match the frame at that edge, leaving Poisson nothing to do);
- ``model`` (done by the caller, engine.jobs): the paste re-noised and denoised by the diffusion model over the
  footprint plus a band (SDEdit).

The label is the fitted donor's own mask, exactly (the pasted polyp's outline); every pixel outside the footprint
keeps the target frame's byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.masks.instances import Instance
from engine.masks.placement import NoPlace, polyp_free, visible_mucosa
from engine.masks.size_prior import SizeDistribution
from engine.pipelines.blending import poisson_blend
from engine.transplant.donors import MIN_RING_PX, RING_FRACTION, Donor, DonorPool
from engine.transplant.fitting import draw_fit, lab_statistics, match_colour, transform

HARMONIZE_MODES = ("none", "poisson", "model")
DEFAULT_HARMONIZE = "model"
# How far the model re-noises a paste (SDEdit). Measured on 24 held-out Kvasir frames (docs/transplant.md): at 0.3
# and 0.5 the seam is as smooth, the judge finds about as many, and 0.3 keeps more of the donor's own detail.
DEFAULT_STRENGTH = 0.3
BAND_FRACTION = 0.1  # the band around the footprint the model may redraw, as a fraction of the polyp's diameter
MIN_BAND_PX = 4
FEATHER_FRACTION = 0.12  # the soft margin's width, as a fraction of the polyp's equivalent diameter
MIN_FEATHER_PX = 3
SHRINK = 0.85  # the linear scale kept per step when the drawn size finds no free place
MIN_POLYP_PIXELS = 64  # smaller than this, a frame has no place for a transplant


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


def free_area(frame: np.ndarray, existing: list[Instance]) -> np.ndarray:
    """Where a paste may go: visible mucosa (no black border, its text, overlay boxes: engine.masks.placement)
    clear of the frame's own polyps."""
    return visible_mucosa(frame) & polyp_free(existing, *frame.shape[:2])


def harmonize_region(transplant: "Transplant") -> np.ndarray:
    """The footprint widened by a band: what the model may redraw in ``harmonize="model"``."""
    band = max(MIN_BAND_PX, round(BAND_FRACTION * equivalent_diameter(int(transplant.label.sum()))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    return cv2.dilate(transplant.footprint.astype(np.uint8), kernel).astype(bool)


def transplant_variant(frame: np.ndarray, existing: list[Instance], pool: DonorPool, sizes: SizeDistribution | None,
                       seed: int, harmonize: str) -> Transplant:
    """One variant's transplant, every choice from its seed: a donor polyp from the pool, a size from ``sizes``
    (the input's own polyp sizes; None: the donor's own size), a fit and a free place on ``frame``, pasted
    ("model" is pasted as "none" here; the caller runs the model over ``harmonize_region``)."""
    rng = np.random.default_rng(seed)
    donor = pool.draw(rng)
    size = sizes.sample(rng) if sizes is not None else donor.area_fraction
    paste = "none" if harmonize == "model" else harmonize
    result = transplant(frame, free_area(frame, existing), donor, size, rng, harmonize=paste)
    result.record["harmonize"] = harmonize
    if sizes is not None:
        result.record["size_source"] = sizes.source
    return result


def find_place(free: np.ndarray, footprint: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """(top, left) of a position where ``footprint`` lies wholly on ``free``, drawn uniformly among all such
    positions, or None. Exact for any shape: the count of pixels that are not free under the footprint at every
    offset is one correlation (OpenCV's filter2D, by DFT for a large footprint)."""
    height, width = free.shape
    foot_h, foot_w = footprint.shape
    if foot_h > height or foot_w > width or not footprint.any():
        return None
    blocked = (~free).astype(np.float32)
    overlap = cv2.filter2D(blocked, cv2.CV_32F, footprint.astype(np.float32), anchor=(0, 0),
                           borderType=cv2.BORDER_CONSTANT)[: height - foot_h + 1, : width - foot_w + 1]
    positions = np.argwhere(overlap < 0.5)
    if positions.size == 0:
        return None
    top, left = (int(v) for v in positions[int(rng.integers(0, len(positions)))])
    if not free[top:top + foot_h, left:left + foot_w][footprint].all():  # guards the correlation's rounding
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
    scale = base_scale
    while scale * scale * donor.mask.sum() >= MIN_POLYP_PIXELS:
        fit = draw_fit(rng, scale, warp)
        pixels, mask, ring, covered = transform(donor.pixels, donor.mask, donor.ring, fit)
        alpha = soft_alpha(mask, covered)
        place = find_place(free, alpha > 0, rng) if mask.sum() >= MIN_POLYP_PIXELS else None
        if place is not None:
            break
        scale *= SHRINK
    else:
        raise NoPlace(f"no free, visible place for a polyp of {area_fraction:.1%} of the frame (nor a smaller one) "
                      "on this frame")
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

    if harmonize == "poisson":
        # Seamless cloning: the donor's own pixels over the whole footprint are the guide (their gradients: its
        # texture and its margin's), the frame's pixels at the footprint's edge the boundary values; the result is
        # then pasted with the same feathered alpha, as the pipelines' paste-back does, which hides the coarse
        # solve's error along the edge of a large footprint (engine.pipelines.blending.poisson_blend).
        guide = frame.copy()
        guide[box] = np.where(footprint[box][..., None], pixels, guide[box])
        pixels = poisson_blend(frame, guide, footprint)[box]
    image = frame.copy()
    region = image[box].astype(np.float32)
    blended = region * (1.0 - alpha[..., None]) + pixels.astype(np.float32) * alpha[..., None]
    image[box] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    record = {
        "donor": donor.describe(), "fit": fit.to_json(), "place": {"top": top, "left": left},
        "size_drawn": round(float(area_fraction), 6), "size_placed": round(float(label.sum()) / (height * width), 6),
        "harmonize": harmonize, **colour_record,
    }
    return Transplant(image=image, label=label, footprint=footprint, record=record)
