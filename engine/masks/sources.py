"""Mask sources: where in a frame to inpaint, and what the labels of the result are.

- ``user``: the frame's mask file, as drawn (pixel mask → polygon labels);
- ``box``: each polyp's bounding box widened by ``box_pad`` pixels (Polyp-Gen's sampler uses 15); the label
  of a box-masked generation is that box, flagged ``shape="box"`` (its outline is unknown);
- ``random``: a polyp outline (a lobulated ellipse, engine.masks.outlines) of a size drawn from the job's size
  distribution (the input's own polyps', else the Kvasir-SEG prior: engine.masks.size_prior), on free,
  visible mucosa (engine.masks.placement), sometimes cut by the view's border; add mode only. The region
  says the size drawn, the size placed (smaller when it had to shrink to fit, or was cut) and where the
  size came from;
- ``retrieved``: a box proposed by the retrieval proposer (engine.retrieval) from a database of frames whose
  polyps were removed: where similar frames had theirs. The label is that box (``shape="box"``).

Existing polyps (from the mask file when there is one, else from label files) that the region covers by
more than half are replaced (add) or removed (remove); the others are carried into the variant's labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.errors import InputError
from engine.masks.instances import (
    Instance,
    box_instance,
    instance_from_mask,
    instances_from_mask,
    overlap_fraction,
    padded_box_mask,
)
from engine.masks.placement import NoPlace, place_polyp
from engine.masks.size_prior import SizeDistribution, kvasir_seg_prior

MASK_SOURCES = ("user", "box", "random", "retrieved")
MODES = ("add", "remove")
MAX_REGION_FRACTION = 0.9  # a region over 90 % of the frame leaves nothing of the frame to keep
COVERED = 0.5


class Skip(Exception):
    """This frame has nothing to do for the job (e.g. no polyp to remove): not a failure."""


@dataclass
class Region:
    mask: np.ndarray  # bool (H, W): pixels to inpaint
    generated: list[Instance] = field(default_factory=list)
    removed: list[Instance] = field(default_factory=list)
    kept: list[Instance] = field(default_factory=list)
    size: dict | None = None  # random masks: size_drawn, size_placed (fractions of the frame), size_source


def _check_coverage(mask: np.ndarray, what: str) -> None:
    fraction = float(mask.mean())
    if fraction > MAX_REGION_FRACTION:
        raise InputError(f"{what} covers {fraction:.0%} of the frame (over {MAX_REGION_FRACTION:.0%}): nothing would be left of the frame")


def _split_existing(existing: list[Instance], region: np.ndarray) -> tuple[list[Instance], list[Instance]]:
    covered, kept = [], []
    for instance in existing:
        (covered if overlap_fraction(instance, region) > COVERED else kept).append(instance)
    return covered, kept


def random_region(frame: np.ndarray, avoid: list[Instance], seed: int, sizes: SizeDistribution) -> Region:
    """A new polyp of a size drawn from `sizes`, placed on free, visible mucosa; every choice from `seed`."""
    rng = np.random.default_rng(seed)
    try:
        placement = place_polyp(frame, avoid, sizes.sample(rng), rng)
    except NoPlace as reason:
        raise Skip(str(reason)) from None
    size = {"size_drawn": round(placement.size_drawn, 6), "size_placed": round(placement.size_placed, 6),
            "size_source": sizes.source}
    return Region(placement.mask, generated=[instance_from_mask(placement.mask, "generated")], kept=avoid, size=size)


def resolve_region(
    mode: str,
    mask_source: str,
    frame: np.ndarray,
    user_mask: np.ndarray | None,
    label_instances: list[Instance],
    box_pad: int,
    seed: int,
    proposal_box: tuple[float, float, float, float] | None = None,
    sizes: SizeDistribution | None = None,
) -> Region:
    """The region to inpaint and the resulting labels, for one frame (and, for `random`, one variant seed and
    the job's size distribution: the Kvasir-SEG prior when none is given)."""
    height, width = frame.shape[:2]
    if user_mask is not None and user_mask.shape != (height, width):
        raise InputError(f"mask is {user_mask.shape[1]}×{user_mask.shape[0]} but the frame is {width}×{height}")
    has_user_mask = user_mask is not None and user_mask.any()
    existing = instances_from_mask(user_mask, "mask") if has_user_mask else list(label_instances)

    if mask_source == "user":
        if user_mask is None:
            raise Skip("no mask file for this frame")
        if not has_user_mask:
            raise Skip("the mask file is empty")
        _check_coverage(user_mask, "the mask")
        region = user_mask.copy()
        covered, kept = _split_existing(existing, region)
        if mode == "add":
            return Region(region, generated=instances_from_mask(region, "generated"), removed=covered, kept=kept)
        return Region(region, removed=covered, kept=kept)

    if mask_source == "box":
        if not existing:
            raise Skip("no polyp in this frame (no mask or label) to take a box from")
        region = np.zeros((height, width), bool)
        boxes = []
        for instance in existing:
            box = padded_box_mask(instance.bbox, box_pad, height, width)
            boxes.append(box)
            region |= box
        _check_coverage(region, "the padded boxes")
        covered, kept = _split_existing(existing, region)
        if mode == "add":
            generated = [box_instance(instance_from_mask(box, "generated").bbox, "generated") for box in boxes]
            return Region(region, generated=generated, removed=covered, kept=kept)
        return Region(region, removed=covered, kept=kept)

    if mask_source == "random":
        if mode != "add":
            raise InputError("the random mask source only adds polyps: removing needs to know where a polyp is")
        return random_region(frame, existing, seed, sizes or kvasir_seg_prior())

    if mask_source == "retrieved":
        if proposal_box is None:
            raise Skip("the retrieval proposer found no acceptable place in this frame")
        region = padded_box_mask(proposal_box, 0, height, width)
        _check_coverage(region, "the proposal")
        covered, kept = _split_existing(existing, region)
        generated = [box_instance(instance_from_mask(region, "generated").bbox, "generated")] if mode == "add" else []
        return Region(region, generated=generated, removed=covered, kept=kept)
    raise InputError(f"mask source {mask_source!r} is not one of {', '.join(MASK_SOURCES)}")
