"""Training pictures drawn with PIL (no matplotlib): the loss curve, and grids of labelled image rows."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def loss_curve_png(points: list[tuple[int, float]], width: int = 720, height: int = 360) -> bytes:
    """Loss against step, log-scaled y, the logged values in grey and their running mean in blue."""
    steps = np.array([p[0] for p in points], dtype=np.float64)
    losses = np.array([max(p[1], 1e-12) for p in points], dtype=np.float64)
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    smooth_steps = steps[window - 1:]
    left, right, top, bottom = 70, 20, 20, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    lo, hi = math.log10(losses.min()), math.log10(losses.max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1 = steps.min(), max(steps.max(), steps.min() + 1)

    def xy(step, loss):
        x = left + (step - x0) / (x1 - x0) * (width - left - right)
        y = top + (hi - math.log10(max(loss, 1e-12))) / (hi - lo) * (height - top - bottom)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline=(120, 120, 120))
    for decade in range(math.floor(lo), math.ceil(hi) + 1):
        for mult in (1, 2, 5):
            value = mult * 10.0**decade
            if lo <= math.log10(value) <= hi:
                _, y = xy(x0, value)
                draw.line([left, y, width - right, y], fill=(230, 230, 230))
                draw.text((4, y - 6), f"{value:.3g}", fill=(60, 60, 60), font=font)
    for frac in np.linspace(0, 1, 6):
        step = x0 + frac * (x1 - x0)
        x, _ = xy(step, losses[0])
        draw.text((x - 12, height - bottom + 6), f"{int(step)}", fill=(60, 60, 60), font=font)
    draw.line([xy(s, l) for s, l in zip(steps, losses)], fill=(180, 180, 180), width=1)
    if len(smooth) >= 2:
        draw.line([xy(s, l) for s, l in zip(smooth_steps, smooth)], fill=(33, 102, 172), width=2)
    draw.text((left + 6, top + 4), "training loss (log scale) vs step", fill=(0, 0, 0), font=font)
    return _png(image)


def image_grid(rows: list[list[np.ndarray]], labels: list[str] | None = None, tile: int = 128,
               header: list[str] | None = None) -> Image.Image:
    """A grid of uint8 RGB tiles (each resized to ``tile``×``tile``), one row per entry, optional captions."""
    font = ImageFont.load_default()
    label_w = 150 if labels else 0
    header_h = 16 if header else 0
    columns = max(len(r) for r in rows)
    grid = Image.new("RGB", (label_w + columns * (tile + 2), header_h + len(rows) * (tile + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    if header:
        for c, text in enumerate(header):
            draw.text((label_w + c * (tile + 2) + 4, 2), text, fill=(0, 0, 0), font=font)
    for r, row in enumerate(rows):
        y = header_h + r * (tile + 2)
        if labels:
            draw.text((4, y + tile // 2 - 6), labels[r][:24], fill=(0, 0, 0), font=font)
        for c, array in enumerate(row):
            picture = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR)
            grid.paste(picture, (label_w + c * (tile + 2), y))
    return grid
