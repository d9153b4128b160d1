"""Mask sources: where in a frame to inpaint, and what the labels of the result are.

- ``user``: the frame's mask file, as drawn (pixel mask → polygon labels);
- ``box``: each polyp's bounding box widened by ``box_pad`` pixels (Polyp-Gen's sampler uses 15); the label
  of a box-masked generation is that box, flagged ``shape="box"`` (its outline is unknown);
- ``random``: a random convex polygon of 5–12 vertices in a free, visible part of the frame (Polyp-Gen's
  training masks are such polygons); add mode only;
- ``retrieved``: a box proposed by the retrieval proposer (engine.retrieval) from a database of frames whose
  polyps were removed: where similar frames had theirs. The label is that box (``shape="box"``).

Existing polyps (from the mask file when there is one, else from label files) that the region covers by
more than half are replaced (add) or removed (remove); the others are carried into the variant's labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
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


def _check_coverage(mask: np.ndarray, what: str) -> None:
    fraction = float(mask.mean())
    if fraction > MAX_REGION_FRACTION:
        raise InputError(f"{what} covers {fraction:.0%} of the frame (over {MAX_REGION_FRACTION:.0%}): nothing would be left of the frame")


def _split_existing(existing: list[Instance], region: np.ndarray) -> tuple[list[Instance], list[Instance]]:
    covered, kept = [], []
    for instance in existing:
        (covered if overlap_fraction(instance, region) > COVERED else kept).append(instance)
    return covered, kept


def random_polygon_mask(frame: np.ndarray, avoid: list[Instance], seed: int, attempts: int = 200) -> np.ndarray:
    """A convex 5–12-gon inscribed in a random box of 12–30 % of the shorter side, fully on visible mucosa
    (not the black endoscope border) and clear of existing polyps."""
    height, width = frame.shape[:2]
    visible = cv2.erode((frame.max(axis=2) > 30).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    blocked = np.zeros((height, width), bool)
    for instance in avoid:
        blocked |= padded_box_mask(instance.bbox, 10, height, width)
    rng = np.random.default_rng(seed)
    side = min(height, width)
    for _ in range(attempts):
        box_h = rng.uniform(0.12, 0.30) * side
        box_w = box_h * rng.uniform(0.7, 1.4)
        if box_w >= width - 2 or box_h >= height - 2:
            continue
        cx = rng.uniform(box_w / 2 + 1, width - box_w / 2 - 1)
        cy = rng.uniform(box_h / 2 + 1, height - box_h / 2 - 1)
        vertices = int(rng.integers(5, 13))
        angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
        radii = rng.uniform(0.75, 1.0, vertices)
        points = np.stack([cx + np.cos(angles) * radii * box_w / 2, cy + np.sin(angles) * radii * box_h / 2], axis=1)
        hull = cv2.convexHull(np.round(points).astype(np.int32))
        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [hull], 1)
        mask = mask.astype(bool)
        # Random angles can bunch up into a sliver: keep shapes that fill most of their ellipse.
        if mask.sum() < max(64, 0.5 * np.pi / 4 * box_w * box_h) or (mask & ~visible).any() or (mask & blocked).any():
            continue
        return mask
    raise Skip("no free, visible place for a polyp on this frame")


def resolve_region(
    mode: str,
    mask_source: str,
    frame: np.ndarray,
    user_mask: np.ndarray | None,
    label_instances: list[Instance],
    box_pad: int,
    seed: int,
    proposal_box: tuple[float, float, float, float] | None = None,
) -> Region:
    """The region to inpaint and the resulting labels, for one frame (and, for `random`, one variant seed)."""
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
        region = random_polygon_mask(frame, existing, seed)
        return Region(region, generated=[instance_from_mask(region, "generated")], kept=existing)

    if mask_source == "retrieved":
        if proposal_box is None:
            raise Skip("the retrieval proposer found no acceptable place in this frame")
        region = padded_box_mask(proposal_box, 0, height, width)
        _check_coverage(region, "the proposal")
        covered, kept = _split_existing(existing, region)
        generated = [box_instance(instance_from_mask(region, "generated").bbox, "generated")] if mode == "add" else []
        return Region(region, generated=generated, removed=covered, kept=kept)
    raise InputError(f"mask source {mask_source!r} is not one of {', '.join(MASK_SOURCES)}")
