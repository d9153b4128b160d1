"""Mask geometry: binarising, resizing to latent size the way diffusers does, and feathering for paste-back."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from engine.errors import InputError


def binarize(mask: np.ndarray, threshold: int = 127) -> np.ndarray:
    """A boolean (H, W) mask from bool, {0,1} or 8-bit (noisy JPEG) input; 3-channel masks are averaged.

    8-bit masks are foreground where > threshold (Kvasir-SEG's JPEG masks carry ringing around 0 and 255).
    """
    array = np.asarray(mask)
    if array.ndim == 3:
        if array.shape[2] == 4:  # RGBA: use colour, ignore alpha
            array = array[:, :, :3]
        array = array.mean(axis=2)
    if array.ndim != 2:
        raise InputError(f"a mask must be a 2-D image, got an array of shape {array.shape}")
    if array.dtype == bool:
        return array.copy()
    if np.issubdtype(array.dtype, np.floating):
        if array.size and array.max() <= 1.0:
            return array >= 0.5
        return array > threshold
    if array.size and array.max() <= 1:
        return array.astype(bool)
    return array > threshold


def nearest_resize_like_torch(mask: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``torch.nn.functional.interpolate(mode="nearest")`` in numpy: source index = floor(dst * in / out)."""
    in_h, in_w = mask.shape[-2:]
    rows = np.minimum((np.arange(out_h) * (in_h / out_h)).astype(np.int64), in_h - 1)
    cols = np.minimum((np.arange(out_w) * (in_w / out_w)).astype(np.int64), in_w - 1)
    return mask[..., rows[:, None], cols[None, :]]


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a boolean mask smoothly (area-weighted) and threshold at one half, keeping thin parts fair."""
    if mask.shape == (height, width):
        return mask.copy()
    image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    resized = image.resize((width, height), resample=Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(resized) >= 128


def feather_alpha(mask: np.ndarray, feather_px: int) -> np.ndarray:
    """Blend weights for pasting generated pixels back: 1 deep inside the mask, ramping to 0 at its edge,
    and exactly 0 everywhere outside, so no pixel outside the mask can change."""
    inside = mask.astype(np.float32)
    if feather_px <= 0 or not mask.any():
        return inside
    image = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    # Shrink by about half the feather width, then blur by the other half: the ramp ends at the edge.
    shrink = max(1, feather_px // 2)
    eroded = image.filter(ImageFilter.MinFilter(2 * shrink + 1))
    blurred = eroded.filter(ImageFilter.GaussianBlur(radius=max(0.5, feather_px / 2)))
    alpha = (np.asarray(blurred, dtype=np.float32) / 255.0) * inside
    # A mask thinner than the feather would all but vanish: paste it hard instead.
    if alpha.max() < 0.5:
        return inside
    return alpha
