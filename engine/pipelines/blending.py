"""Gradient-domain (Poisson) blending of a generated region into a frame (Pérez, Gangnet & Blake, 2003).

Pasting generated pixels with a feathered alpha keeps their colour: where the model's colour is a little off (a
compact model filling a removed polyp's box with slightly darker mucosa) the box stays visible. Poisson blending
keeps the generated region's *gradients* (its texture, folds, vessels, highlights) and takes its *values* from the
frame at the mask's edge, solving, per colour channel, for the pixels f inside the mask Ω:

    |N_p| f_p − Σ_{q ∈ N_p ∩ Ω} f_q = Σ_{q ∈ N_p ∩ ∂Ω} frame_q + Σ_{q ∈ N_p} (g_p − g_q)

(N_p the 4-neighbours of p inside the image, g the generated image, ∂Ω the frame pixels bordering Ω). The seam
disappears by construction and a global colour offset of g inside Ω is removed. Every pixel outside Ω keeps the
frame's own byte.

Used for removal ("Normal") by default — there the region should continue the surrounding mucosa — and on request
for added polyps (``blend="poisson"``), where it tints the lesion toward its surroundings. Removal's default,
``"mucosa"``, is this blend followed by engine.pipelines.detail_transfer: the fine texture of the mucosa around the
region, which a fill painted at the model's working size lacks, quilted into it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
from PIL import Image

BLEND_MODES = ("feather", "poisson", "mucosa")


def default_blend(removing: bool) -> str:
    """The one rule: Poisson with the surround's fine texture when removing a polyp (the region should continue the
    mucosa around it), feathering when adding one (an added polyp keeps its own colour and surface)."""
    return "mucosa" if removing else "feather"

MAX_UNKNOWNS = 20000  # mask pixels solved exactly; larger masks are solved on a coarser grid


def poisson_blend(frame: np.ndarray, generated: np.ndarray, mask: np.ndarray, max_unknowns: int = MAX_UNKNOWNS) -> np.ndarray:
    """``frame`` and ``generated`` uint8 (H, W, 3) of one size, ``mask`` bool (H, W) → uint8 (H, W, 3).

    A mask of more than ``max_unknowns`` pixels is solved on a grid k× coarser (k the smallest integer that brings
    it under): the *correction* f − g is harmonic — smooth inside the mask — so it is solved coarse and resized
    back, and the result is g plus that correction; only within about k pixels of the mask's edge does it differ
    from the exact solve (the feathered paste that follows hides it). This bounds the cost at about 0.2 s here.

    Boundary values that differ from the generated image far more than the boundary does as a whole (a specular
    highlight, the black frame border, an instrument on the mask's edge) are clamped first (``_clamp_ring``), so
    they do not spread into the region as a smooth blob. Where the mask reaches the frame's edge, that edge is
    free (the region's own gradients decide), as it is for the exact solve."""
    if frame.shape != generated.shape or frame.shape[:2] != mask.shape:
        raise ValueError(f"frame {frame.shape}, generated {generated.shape} and mask {mask.shape} must agree")
    inside = np.asarray(mask, bool)
    out = frame.copy()
    count = int(inside.sum())
    if count == 0:
        return out
    guide = generated.astype(np.float64)
    difference = _clamp_ring(frame.astype(np.float64) - guide, inside)
    factor = int(np.ceil(np.sqrt(count / max_unknowns))) if count > max_unknowns else 1
    if factor == 1:
        solved = _solve(guide + difference, guide, inside)
        out[inside] = np.clip(np.rint(solved), 0, 255).astype(np.uint8)
        return out
    # Coarse: the mask's box widened by 2 coarse cells (inside the frame), edge-padded to a multiple of the factor.
    ys, xs = np.nonzero(inside)
    height, width = inside.shape
    y0, x0 = max(0, ys.min() - 2 * factor), max(0, xs.min() - 2 * factor)
    y1, x1 = min(height, ys.max() + 1 + 2 * factor), min(width, xs.max() + 1 + 2 * factor)
    crop_h, crop_w = y1 - y0, x1 - x0
    rows, cols = -(-crop_h // factor), -(-crop_w // factor)
    pad = ((0, rows * factor - crop_h), (0, cols * factor - crop_w))
    crop_guide = np.pad(guide[y0:y1, x0:x1], pad + ((0, 0),), mode="edge")
    crop_difference = np.pad(difference[y0:y1, x0:x1], pad + ((0, 0),), mode="edge")
    crop_inside = np.pad(inside[y0:y1, x0:x1], pad, mode="edge")
    coarse_guide = crop_guide.reshape(rows, factor, cols, factor, 3).mean(axis=(1, 3))
    coarse_difference = crop_difference.reshape(rows, factor, cols, factor, 3).mean(axis=(1, 3))
    coarse_inside = crop_inside.reshape(rows, factor, cols, factor).mean(axis=(1, 3)) >= 0.5
    correction = _clamp_ring(coarse_difference, coarse_inside)  # boundary data, and the field outside the mask
    if coarse_inside.any():
        solved = _solve(coarse_guide + correction, coarse_guide, coarse_inside)
        correction[coarse_inside] = solved - coarse_guide[coarse_inside]
    fine = np.stack([np.asarray(Image.fromarray(correction[..., c].astype(np.float32), mode="F").resize(
        (cols * factor, rows * factor), Image.Resampling.BILINEAR)) for c in range(3)], axis=-1)[:crop_h, :crop_w]
    blended = np.clip(np.rint(guide[y0:y1, x0:x1] + fine), 0, 255).astype(np.uint8)
    region = inside[y0:y1, x0:x1]
    out[y0:y1, x0:x1][region] = blended[region]
    return out


def _clamp_ring(difference: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``difference`` (frame − generated, H × W × 3) with its pixels bordering ``inside`` clamped, per channel, to
    the border's median ± max(25, 3 × its median absolute deviation): outliers on the boundary (highlights, the
    black border, instruments) are pulled toward the rest. Only the solve sees this; no output pixel outside the
    mask comes from it."""
    ring = np.zeros_like(inside)
    ring[1:] |= inside[:-1]
    ring[:-1] |= inside[1:]
    ring[:, 1:] |= inside[:, :-1]
    ring[:, :-1] |= inside[:, 1:]
    ring &= ~inside
    if not ring.any():
        return difference
    values = difference[ring]
    median = np.median(values, axis=0)
    spread = np.maximum(25.0, 3.0 * np.median(np.abs(values - median), axis=0))
    clamped = difference.copy()
    clamped[ring] = np.clip(values, median - spread, median + spread)
    return clamped


def _solve(source: np.ndarray, guide: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The Poisson equation above for the pixels of ``inside`` (float64 images) → their values (count, 3)."""
    ys, xs, neighbours, factors = _system(inside)
    # A tiny pull toward g keeps the system non-singular when the mask has no boundary (it covers the whole
    # image: the solution is then g itself); elsewhere it moves the result by far less than one level.
    rhs = REGULARISER * guide[ys, xs]
    for p, qy, qx, interior in neighbours:
        rhs[p] += guide[ys[p], xs[p]] - guide[qy, qx]
        boundary = ~interior
        rhs[p[boundary]] += source[qy[boundary], qx[boundary]]
    return factors.solve(rhs)


REGULARISER = 1e-6
_SYSTEMS: OrderedDict = OrderedDict()  # mask → its factorised system: the variants of one frame share their mask
_SYSTEMS_KEPT = 4


def _system(inside: np.ndarray):
    """The mask's pixels, their 4-neighbours and the LU factors of the system's matrix (it depends on the mask
    only), built once per mask and kept for the next few calls."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    key = (inside.shape, hashlib.blake2b(np.packbits(inside).tobytes(), digest_size=16).digest())
    if key in _SYSTEMS:
        _SYSTEMS.move_to_end(key)
        return _SYSTEMS[key]
    height, width = inside.shape
    ys, xs = np.nonzero(inside)
    count = len(ys)
    index = np.full((height, width), -1, np.int64)
    index[ys, xs] = np.arange(count)
    rows, cols = [np.arange(count)], [np.arange(count)]
    diagonal = np.full(count, REGULARISER)
    values: list[np.ndarray] = []
    neighbours = []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        valid = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        p = np.nonzero(valid)[0]
        qy, qx = ny[valid], nx[valid]
        diagonal[p] += 1.0
        neighbour = index[qy, qx]
        interior = neighbour >= 0
        rows.append(p[interior])
        cols.append(neighbour[interior])
        values.append(np.full(int(interior.sum()), -1.0))
        neighbours.append((p, qy, qx, interior))
    matrix = coo_matrix((np.concatenate([diagonal, *values]), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(count, count)).tocsc()
    _SYSTEMS[key] = system = (ys, xs, neighbours, splu(matrix))
    while len(_SYSTEMS) > _SYSTEMS_KEPT:
        _SYSTEMS.popitem(last=False)
    return system
