"""Reading frames and masks the way curators' folders hold them, with one clear error per bad file.

Frames: EXIF orientation applied; grayscale, 16-bit, RGBA/LA (alpha ignored), CMYK and palette images
converted to RGB. Masks: any of those, binarised at > 127 (noisy JPEG masks, as
Kvasir-SEG ships them). The pixel count is checked from the header before decoding, so a 20000×20000 frame
is refused in milliseconds instead of taking gigabytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import InputError
from engine.masks.geometry import binarize

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_FRAME_PIXELS = 40_000_000  # 40 MP: far above endoscopy (≤ 4K) and below what a 16 GB PC decodes comfortably

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def is_frame_file(path: Path) -> bool:
    return path.suffix.lower() in FRAME_EXTENSIONS and not path.name.startswith(".")


def _open_checked(path: str | os.PathLike[str]) -> Image.Image:
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    # Image.open reads the header only; Pillow's own decompression-bomb check is replaced by the pixel
    # limit below, which names the size.
    saved_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (unrecognised content)") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot be opened ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
    width, height = image.size
    if width * height > MAX_FRAME_PIXELS:
        image.close()
        raise InputError(
            f"{path}: {width}×{height} pixels ({width * height / 1e6:.0f} MP) is over the "
            f"{MAX_FRAME_PIXELS / 1e6:.0f} MP limit for a frame"
        )
    return image


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(array / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA").convert("RGB")  # alpha ignored: frames are opaque video frames
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def read_frame(path: str | os.PathLike[str]) -> np.ndarray:
    """An RGB uint8 (H, W, 3) frame, EXIF orientation applied; InputError naming the file otherwise."""
    image = _open_checked(path)
    try:
        with image:
            upright = ImageOps.exif_transpose(image)
            array = _to_rgb_array(upright)
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data shows up at decode time
        raise InputError(f"{path}: damaged image data ({exc})") from None
    return np.ascontiguousarray(array)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A boolean (H, W) mask: foreground where the gray level is > 127; EXIF orientation applied."""
    image = _open_checked(path)
    try:
        with image:
            upright = ImageOps.exif_transpose(image)
            if upright.mode in _SIXTEEN_BIT_MODES:
                array = np.asarray(upright, dtype=np.float64)
                scale = 65535.0 if array.max(initial=0) > 255 else 255.0
                gray = np.rint(array / scale * 255.0)
            else:
                gray = np.asarray(upright.convert("L"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: damaged image data ({exc})") from None
    return binarize(gray.astype(np.uint8))
