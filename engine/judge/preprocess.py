"""The judge's view of a frame: the whole frame resized to size × size (aspect squeezed, never cropped: a
polyp may lie anywhere, borders included), scaled to [0, 1] and normalised per channel.

Training (engine.evaluation.segdata) and inference (engine.judge.model) both call ``resize_frame`` and
``normalise``, so the exported model sees exactly the pixels it was trained on. Probability maps go back to
the frame with ``resize_probability`` (bilinear, the inverse squeeze).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# One frame check for both feature models (the judge and DINOv2): RGB uint8, at least 2×2 pixels.
from engine.retrieval.features import check_frame as check_rgb


IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def resize_frame(frame: np.ndarray, width: int, height: int | None = None) -> np.ndarray:
    """uint8 (height, width, 3): area averaging when shrinking, bilinear when enlarging."""
    frame = check_rgb(frame)
    height = width if height is None else height
    if frame.shape[:2] == (height, width):
        return frame.copy()
    shrinking = frame.shape[0] * frame.shape[1] >= width * height
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def resize_mask_fraction(mask: np.ndarray, width: int, height: int | None = None) -> np.ndarray:
    """float32 (height, width) in [0, 1]: the fraction of each output pixel the boolean mask covers."""
    height = width if height is None else height
    values = np.asarray(mask, np.float32)
    if values.shape == (height, width):
        return values.copy()
    shrinking = values.shape[0] * values.shape[1] >= width * height
    return np.clip(cv2.resize(values, (width, height), interpolation=cv2.INTER_AREA if shrinking
                              else cv2.INTER_LINEAR), 0.0, 1.0)


def normalise(images: np.ndarray, mean: Sequence[float] = IMAGE_MEAN, std: Sequence[float] = IMAGE_STD) -> np.ndarray:
    """uint8 (B, H, W, 3) or (H, W, 3) → float32 (B, 3, H, W) or (3, H, W), normalised."""
    x = np.asarray(images, np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    axes = (0, 3, 1, 2) if x.ndim == 4 else (2, 0, 1)
    return np.ascontiguousarray(x.transpose(axes))


def prepare_batch(frames: Sequence[np.ndarray], size: int, mean=IMAGE_MEAN, std=IMAGE_STD) -> np.ndarray:
    """float32 (B, 3, size, size): each frame resized whole and normalised."""
    return normalise(np.stack([resize_frame(f, size) for f in frames]), mean, std)


def resize_probability(probability: np.ndarray, width: int, height: int) -> np.ndarray:
    """A (S, S) probability map back to a width × height frame (bilinear), float32 in [0, 1]."""
    p = np.asarray(probability, np.float32)
    if p.shape == (height, width):
        return p.copy()
    return np.clip(cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
