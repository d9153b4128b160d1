"""From a frame of any size to the model's working size and back.

The model sees the frame resized (aspect kept, sides a multiple of the U-Net's size step); the result is
resized back to the frame's own resolution and only the masked region is pasted in, with a feathered edge
that stays inside the mask. Every pixel outside the mask is the input's own byte.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from engine.errors import InputError
from engine.masks.geometry import feather_alpha


def choose_working_size(width: int, height: int, target: int, multiple: int) -> tuple[int, int]:
    """(width, height) with about target² pixels, the frame's aspect ratio, and sides a multiple of `multiple`.

    Frames already of such a size (e.g. 512×512 for SD2) are used as they are.
    """
    if width <= 0 or height <= 0:
        raise InputError(f"frame has no pixels ({width}×{height})")
    scale = math.sqrt((target * target) / (width * height))
    work_w = max(multiple, int(round(width * scale / multiple)) * multiple)
    work_h = max(multiple, int(round(height * scale / multiple)) * multiple)
    return work_w, work_h


def check_frame(frame: np.ndarray) -> np.ndarray:
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise InputError(f"a frame must be an RGB uint8 array (H, W, 3), got {array.dtype} {array.shape}")
    return array


def frame_to_model_input(frame: np.ndarray, work_w: int, work_h: int) -> np.ndarray:
    """uint8 (H, W, 3) → float32 (1, 3, h, w) in [-1, 1], resized with Lanczos (as diffusers' processor)."""
    height, width = frame.shape[:2]
    if (width, height) != (work_w, work_h):
        frame = np.asarray(Image.fromarray(frame).resize((work_w, work_h), resample=Image.Resampling.LANCZOS))
    scaled = frame.astype(np.float32) / 255.0
    return (scaled * 2.0 - 1.0).transpose(2, 0, 1)[None]


def decoded_to_image(decoded: np.ndarray) -> np.ndarray:
    """VAE decoder output (N, 3, h, w) in [-1, 1] → float32 (N, h, w, 3) in [0, 1], as diffusers' output_type="np"."""
    return np.clip(decoded / 2.0 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1).astype(np.float32)


def paste_back(frame: np.ndarray, generated: np.ndarray, mask: np.ndarray, feather_px: int) -> np.ndarray:
    """Composite the generated image (float [0,1], working size) into the frame inside the mask only."""
    height, width = frame.shape[:2]
    generated_u8 = np.clip(np.rint(generated * 255.0), 0, 255).astype(np.uint8)
    if generated_u8.shape[:2] != (height, width):
        generated_u8 = np.asarray(
            Image.fromarray(generated_u8).resize((width, height), resample=Image.Resampling.LANCZOS)
        )
    alpha = feather_alpha(mask, feather_px)[:, :, None]
    blended = frame.astype(np.float32) * (1.0 - alpha) + generated_u8.astype(np.float32) * alpha
    blended_u8 = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return np.where(alpha > 0, blended_u8, frame)


def default_feather_px(width: int, height: int) -> int:
    """About 1 % of the shorter side: invisible seams without eating small polyps."""
    return max(2, round(0.01 * min(width, height)))
