"""Pictures for the report, drawn with PIL (no matplotlib): the t-SNE scatter and the closest-pair strip.

t-SNE rather than UMAP: scikit-learn (already a dependency) has it, it is deterministic with a fixed
random_state and PCA initialisation, and at report sizes (≤ a few thousand points) its cost is fine.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REAL_COLOUR = (33, 102, 172)
SYNTH_COLOUR = (214, 96, 77)
MAX_TSNE_POINTS = 1500  # per set; more are subsampled (seeded)


def tsne_embedding(real: np.ndarray, synthetic: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """2-D t-SNE of real and synthetic features together: (real_xy, synthetic_xy, info)."""
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    picks = []
    for x in (real, synthetic):
        idx = np.arange(x.shape[0]) if x.shape[0] <= MAX_TSNE_POINTS else np.sort(
            rng.choice(x.shape[0], MAX_TSNE_POINTS, replace=False))
        picks.append(idx)
    data = np.concatenate([real[picks[0]], synthetic[picks[1]]]).astype(np.float64)
    n = data.shape[0]
    if n < 4:
        return np.zeros((len(picks[0]), 2)), np.zeros((len(picks[1]), 2)), {"skipped": "fewer than 4 points"}
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    data = (data - data.mean(axis=0)) / (data.std(axis=0) + 1e-12)
    options = {"n_components": 2, "perplexity": perplexity, "init": "pca", "random_state": seed}
    try:
        tsne = TSNE(**options, max_iter=750)
    except TypeError:  # scikit-learn < 1.5 calls it n_iter
        tsne = TSNE(**options, n_iter=750)
    xy = tsne.fit_transform(data)
    info = {"perplexity": perplexity, "points_real": len(picks[0]), "points_synthetic": len(picks[1]),
            "standardised": True, "seed": seed}
    return xy[:len(picks[0])], xy[len(picks[0]):], info


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def scatter_png(real_xy: np.ndarray, synthetic_xy: np.ndarray, title: str, size: int = 640) -> Image.Image:
    margin, top = 30, 50
    image = Image.new("RGB", (size, size + top - margin), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 10), title, fill="black", font=_font(15))
    box = (margin, top, size - margin, size - margin + top - margin)
    draw.rectangle(box, outline=(160, 160, 160))
    every = np.concatenate([real_xy, synthetic_xy]) if len(real_xy) + len(synthetic_xy) else np.zeros((1, 2))
    lo, hi = every.min(axis=0), every.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)

    def to_px(xy):
        u = (xy - lo) / span
        return box[0] + 8 + u[:, 0] * (box[2] - box[0] - 16), box[3] - 8 - u[:, 1] * (box[3] - box[1] - 16)

    radius = 3 if len(every) < 800 else 2
    for xy, colour in ((real_xy, REAL_COLOUR), (synthetic_xy, SYNTH_COLOUR)):
        if len(xy) == 0:
            continue
        xs, ys = to_px(xy)
        for x, y in zip(xs, ys):
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    legend_x = size - margin - 190
    for row, (label, colour) in enumerate(((f"real ({len(real_xy)})", REAL_COLOUR),
                                           (f"synthetic ({len(synthetic_xy)})", SYNTH_COLOUR))):
        y = 14 + row * 16
        draw.ellipse((legend_x, y, legend_x + 9, y + 9), fill=colour)
        draw.text((legend_x + 15, y - 3), label, fill="black", font=_font(13))
    return image


def thumbnail(frame: np.ndarray, height: int = 160) -> Image.Image:
    image = Image.fromarray(frame)
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def pair_png(synthetic: np.ndarray, real: np.ndarray, caption: str, flagged: bool, height: int = 160) -> Image.Image:
    """Synthetic | nearest real, side by side, with a caption; a red frame when flagged."""
    left, right = thumbnail(synthetic, height), thumbnail(real, height)
    gap, bar = 6, 22
    image = Image.new("RGB", (left.width + right.width + gap + 8, height + bar + 8),
                      (198, 40, 40) if flagged else (230, 230, 230))
    image.paste(left, (4, 4))
    image.paste(right, (4 + left.width + gap, 4))
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, height + 4, image.width - 4, image.height - 4), fill="white")
    draw.text((8, height + 7), caption, fill="black", font=_font(12))
    return image
