"""Mucosa detail for a removed polyp's region: the fine texture of the mucosa around it, carried into the fill.

A compact model paints the region at its working size (64² for the default) and the result is brought up to the
frame's resolution: a box of 40 % of a 576×720 frame is upscaled about 6×, so everything finer than a few pixels
(the mucosa's grain, its capillaries, the pit pattern) is missing and the fill reads as a blurred patch. A blurred
box in a polyp-free training frame is worse than ugly: a detector can learn "blur = no polyp". This stage keeps
the fill's coarse picture (its light, colour and folds: the model's, after the Poisson blend) and gives it the
*fine* detail of the mucosa around it, by image quilting (Efros & Freeman, 2001) of the surround's relative
detail:

1. relative detail of the frame, per channel: D = frame / blur(frame, σ) − 1, with σ the upscale factor (the
   scale below which the model painted nothing), within [``MIN_SIGMA``, ``MAX_SIGMA``];
2. source blocks: every block of the frame within reach of the region (its box grown by its own size) that lies
   wholly outside the mask, on lit mucosa (no black view border, no overlay text, no specular highlight or its
   fringe), a random few hundred of them, less those far livelier than the typical one (an edge: a fold, the
   view's rim, which copied in becomes a dark dash); D is clipped to [−50 %, +25 %] (lighter is glare);
3. the region's box is tiled with overlapping blocks in raster order, each chosen at random among the
   ``BEST_SHARE`` of the sources that continue what is already laid best — the mismatch relative to the blocks'
   own energy, since plain squared error favours flat blocks and washes the texture out — overlaps cross-faded;
4. inside the mask: blur(fill, σ) · (1 + D_quilted); outside it nothing changes.

Detail that is copied, not generated: the fill's texture statistics are the surround's by construction, and the
choice of blocks is seeded by the frame and the mask (the variants of a frame share it; their coarse pictures
differ). Where the surround has too little lit mucosa for ``MIN_SOURCES`` blocks the fill is left as painted.
"""

from __future__ import annotations

import hashlib

import numpy as np

MIN_SIGMA = 1.5
MAX_SIGMA = 8.0
BEST_SHARE = 0.1  # a block is chosen among the tenth of the sources that continue what is laid best
MAX_SOURCES = 400
MIN_SOURCES = 12
DARK, BRIGHT = 25.0, 225.0  # luma outside these is view border, overlay text or a specular highlight
LIGHTER_AT_MOST, DARKER_AT_MOST = 0.25, 0.5  # the relative detail kept (lighter than that is glare's fringe)
EDGE_ENERGY = 2.5  # a source block with more than this times the median block's detail energy holds an edge
GLARE_HALO = 3  # px around a highlight left out too (its bright fringe)


def _blur(values: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(values.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _luma(image: np.ndarray) -> np.ndarray:
    return image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def detail_sigma(upscale: float) -> float:
    """The scale (Gaussian σ, frame pixels) below which a fill upscaled ``upscale``× holds no detail of its own."""
    return float(min(MAX_SIGMA, max(MIN_SIGMA, upscale)))


def _cross_faded(total: np.ndarray, weight: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Σ fade·block normalised between the two extremes: by Σ fade (right for identical blocks) and by √Σ fade²
    (right for independent ones, whose spread a plain average would shrink); neighbours chosen to continue each
    other are in between."""
    return total / np.sqrt(np.maximum(weight, 1e-6) * np.sqrt(np.maximum(energy, 1e-12)))


def _seed(frame: np.ndarray, mask: np.ndarray) -> int:
    digest = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=8)
    ys, xs = np.nonzero(mask)
    digest.update(np.ascontiguousarray(frame[ys.min():ys.max() + 1, xs.min():xs.max() + 1]).tobytes())
    return int.from_bytes(digest.digest(), "little")


def transfer_mucosa_detail(frame: np.ndarray, filled: np.ndarray, mask: np.ndarray, upscale: float) -> np.ndarray:
    """``frame`` (the input, uint8 H × W × 3), ``filled`` (the same with the region painted), ``mask`` (bool H × W,
    the region) → ``filled`` with the surround's fine detail quilted into the region (uint8); every pixel outside
    the mask is ``filled``'s own. ``upscale``: how many frame pixels one of the model's pixels became."""
    import cv2

    inside = np.asarray(mask, bool)
    if not inside.any():
        return filled
    sigma = detail_sigma(upscale)
    block = int(max(8, round(4 * sigma)))
    overlap = max(2, block // 4)
    step = block - overlap
    height, width = inside.shape
    ys, xs = np.nonzero(inside)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    reach_y, reach_x = max(y1 - y0, 2 * block), max(x1 - x0, 2 * block)
    sy0, sy1 = max(0, y0 - reach_y), min(height, y1 + reach_y)
    sx0, sx1 = max(0, x0 - reach_x), min(width, x1 + reach_x)
    source = frame[sy0:sy1, sx0:sx1].astype(np.float32)
    detail = np.clip(source / (_blur(source, sigma) + 1.0) - 1.0, -DARKER_AT_MOST, LIGHTER_AT_MOST)
    luma = _luma(source)
    glare = cv2.dilate((luma >= BRIGHT).astype(np.uint8), np.ones((2 * GLARE_HALO + 1,) * 2, np.uint8)) > 0
    valid = (~inside[sy0:sy1, sx0:sx1]) & (luma > DARK) & ~glare
    # A block is a source when every pixel of it is valid: a summed-area table over the valid map.
    table = np.pad(valid.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = table[block:, block:] - table[:-block, block:] - table[block:, :-block] + table[:-block, :-block]
    top_lefts = np.argwhere(counts == block * block)
    if len(top_lefts) < MIN_SOURCES:
        return filled
    rng = np.random.default_rng(_seed(frame, inside))
    if len(top_lefts) > MAX_SOURCES:
        top_lefts = top_lefts[rng.choice(len(top_lefts), MAX_SOURCES, replace=False)]
    blocks = np.stack([detail[y:y + block, x:x + block] for y, x in top_lefts])  # (K, b, b, 3)
    # Blocks far livelier than the surround's typical one hold an edge (a fold, the view's rim), not texture:
    # copied in, they become dark dashes.
    energy_of = (blocks ** 2).mean(axis=(1, 2, 3))
    blocks = blocks[energy_of <= EDGE_ENERGY * np.median(energy_of)]

    rows = max(1, -(-(y1 - y0 - overlap) // step))
    cols = max(1, -(-(x1 - x0 - overlap) // step))
    canvas_h, canvas_w = rows * step + overlap, cols * step + overlap
    canvas = np.zeros((canvas_h, canvas_w, 3), np.float32)
    weight = np.zeros((canvas_h, canvas_w, 1), np.float32)
    energy = np.zeros((canvas_h, canvas_w, 1), np.float32)  # Σ fade²: a cross-fade of two blocks keeps their spread
    ramp = np.ones(block, np.float32)
    ramp[:overlap] = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    for row in range(rows):
        for col in range(cols):
            cy, cx = row * step, col * step
            error = np.zeros(len(blocks), np.float32)
            scale = np.zeros(len(blocks), np.float32)
            for overlap_view in ((np.s_[cy:cy + overlap, cx:cx + block], np.s_[:, :overlap]) if row else (),
                                 (np.s_[cy:cy + block, cx:cx + overlap], np.s_[:, :, :overlap]) if col else ()):
                if not overlap_view:
                    continue
                laid_at, candidate_at = overlap_view
                laid = _cross_faded(canvas[laid_at], weight[laid_at], energy[laid_at])
                candidates = blocks[candidate_at]
                error += ((candidates - laid[None]) ** 2).mean(axis=(1, 2, 3))
                scale += (candidates ** 2).mean(axis=(1, 2, 3)) + float((laid ** 2).mean())
            if row or col:  # the mismatch relative to the textures' own energy: plain error would favour flat blocks
                score = error / np.maximum(scale, 1e-12)
                near = np.argsort(score)[:max(1, int(len(blocks) * BEST_SHARE))]
            else:
                near = np.arange(len(blocks))
            chosen = blocks[rng.choice(near)]
            fade = (ramp if row else np.ones(block, np.float32))[:, None] * \
                   (ramp if col else np.ones(block, np.float32))[None, :]
            canvas[cy:cy + block, cx:cx + block] += chosen * fade[..., None]
            weight[cy:cy + block, cx:cx + block] += fade[..., None]
            energy[cy:cy + block, cx:cx + block] += fade[..., None] ** 2
    quilted = _cross_faded(canvas, weight, energy)

    out = filled.copy()
    margin = int(np.ceil(3 * sigma))  # the fill's coarse picture, blurred with its surround (no edge reflection)
    by0, by1, bx0, bx1 = max(0, y0 - margin), min(height, y1 + margin), max(0, x0 - margin), min(width, x1 + margin)
    coarse = _blur(filled[by0:by1, bx0:bx1], sigma)[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
    textured = coarse * (1.0 + quilted[:y1 - y0, :x1 - x0])
    region = inside[y0:y1, x0:x1]
    out[y0:y1, x0:x1][region] = np.clip(np.rint(textured[region]), 0, 255).astype(np.uint8)
    return out
