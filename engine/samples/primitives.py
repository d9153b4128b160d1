"""Drawing primitives of the sample frames: smooth noise, the endoscope border's distance field, and the
pixel windows and grids the polyp and highlight renderers work in. numpy and Pillow only."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """0 below e0, 1 above e1 (or the reverse when e0 > e1), a smooth cubic between."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Smooth band-limited noise, float32 (h, w), roughly zero mean / unit std.

    ``cells`` is the number of noise cells across the longer side.
    """
    cells = max(1.0, float(cells))
    scale = max(h, w) / cells
    gh = int(math.ceil(h / scale)) + 4
    gw = int(math.ceil(w / scale)) + 4
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    img = Image.fromarray(grid, mode="F")
    # sample the interior of the grid so borders are not clamped
    box = (1.5, 1.5, 1.5 + w / scale, 1.5 + h / scale)
    out = np.asarray(img.resize((w, h), Image.BICUBIC, box=box), dtype=np.float32)
    sd = float(out.std())
    if sd > 1e-6:
        out = (out - float(out.mean())) / sd
    return out


def fbm(rng: np.random.Generator, h: int, w: int, cells: float,
        octaves: int = 3, gain: float = 0.5) -> np.ndarray:
    """Fractal noise: ``octaves`` layers of noise(), each twice as fine and ``gain`` times as strong."""
    total = np.zeros((h, w), np.float32)
    amp, norm = 1.0, 0.0
    for i in range(octaves):
        total += amp * noise(rng, h, w, cells * (2 ** i))
        norm += amp * amp
        amp *= gain
    return total / math.sqrt(norm)


def border_sdf(h: int, w: int, inset: float, radius: float) -> np.ndarray:
    """Signed distance (pixels) to the visible rounded rectangle; <0 inside."""
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    hx = w / 2.0 - inset
    hy = h / 2.0 - inset
    qx = np.abs(xs - w / 2.0) - (hx - radius)
    qy = np.abs(ys - h / 2.0) - (hy - radius)
    ox = np.maximum(qx, 0.0)
    oy = np.maximum(qy, 0.0)
    outside = np.sqrt(ox * ox + oy * oy)
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return (outside + inside - radius).astype(np.float32)


def pixel_window(bbox, h, w):
    """The (x0, y0, x1, y1) pixel window a float box covers, clipped to the frame."""
    x0, y0, x1, y1 = bbox
    x0 = max(0, int(math.floor(x0)))
    y0 = max(0, int(math.floor(y0)))
    x1 = min(w, int(math.ceil(x1)) + 1)
    y1 = min(h, int(math.ceil(y1)) + 1)
    return x0, y0, x1, y1


def pixel_grid(x0, y0, x1, y1):
    """Pixel-centre coordinates of a window: xs (1, w) and ys (h, 1), float32."""
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    return xs, ys

