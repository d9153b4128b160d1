"""Pictures of the judge at work (PIL, no matplotlib): frame | truth outline | prediction overlays."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

TRUTH = (0, 255, 0)
PREDICTION = (255, 64, 32)


def overlay(image: np.ndarray, truth: np.ndarray | None, probability: np.ndarray) -> np.ndarray:
    """The frame with the prediction tinted red (by probability) and the truth's outline in green."""
    pixels = image.astype(np.float32).copy()
    alpha = np.clip(probability, 0, 1)[..., None] * 0.5
    pixels = pixels * (1 - alpha) + np.asarray(PREDICTION, np.float32) * alpha
    out = np.clip(pixels, 0, 255).astype(np.uint8)
    if truth is not None:
        contours, _ = cv2.findContours(np.asarray(truth, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, TRUTH, 1)
    return out


def overlay_grid(images, truths, probabilities, path: Path, title: str = "") -> Path:
    """A row per frame: frame | overlay (prediction red, truth outline green); written atomically."""
    from engine.fileio import save_png_atomic

    rows = []
    for image, truth, probability in zip(images, truths, probabilities):
        rows.append(np.concatenate([image, overlay(image, truth, probability)], axis=1))
    grid = np.concatenate(rows, axis=0) if rows else np.zeros((16, 16, 3), np.uint8)
    if title:
        header = Image.new("RGB", (grid.shape[1], 14), (255, 255, 255))
        ImageDraw.Draw(header).text((2, 1), title, fill=(0, 0, 0))
        grid = np.concatenate([np.asarray(header), grid], axis=0)
    return save_png_atomic(path, grid)
