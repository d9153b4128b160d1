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
from engine.pipelines.blending import BLEND_MODES, default_blend, poisson_blend
from engine.pipelines.detail_transfer import transfer_mucosa_detail


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


def check_frame_and_mask(frame: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame as RGB uint8 and the mask binarised, the same size, not empty; InputError saying what is wrong."""
    from engine.masks.geometry import binarize

    frame = check_frame(frame)
    mask = binarize(mask)
    height, width = frame.shape[:2]
    if mask.shape != (height, width):
        raise InputError(f"mask is {mask.shape[1]}×{mask.shape[0]} but the frame is {width}×{height}")
    if not mask.any():
        raise InputError("mask is empty: nothing to inpaint")
    return frame, mask


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


def paste_back(frame: np.ndarray, generated: np.ndarray, mask: np.ndarray, feather_px: int,
               blend: str = "feather") -> np.ndarray:
    """Composite the generated image (float [0,1], working size) into the frame inside the mask only.

    ``blend="poisson"`` first moves the generated pixels inside the mask to the frame's values at the mask's edge,
    keeping their gradients (engine.pipelines.blending), then pastes them with the same feathered edge;
    ``blend="mucosa"`` also gives them the fine texture of the mucosa around the mask, finer than the model's own
    pixels brought up to the frame (engine.pipelines.detail_transfer)."""
    if blend not in BLEND_MODES:
        raise InputError(f"blend {blend!r} is not one of {', '.join(BLEND_MODES)}")
    height, width = frame.shape[:2]
    generated_u8 = np.clip(np.rint(generated * 255.0), 0, 255).astype(np.uint8)
    upscale = max(height / generated_u8.shape[0], width / generated_u8.shape[1])
    if generated_u8.shape[:2] != (height, width):
        generated_u8 = np.asarray(
            Image.fromarray(generated_u8).resize((width, height), resample=Image.Resampling.LANCZOS)
        )
    if blend in ("poisson", "mucosa"):
        generated_u8 = poisson_blend(frame, generated_u8, mask)
    if blend == "mucosa":
        generated_u8 = transfer_mucosa_detail(frame, generated_u8, mask, upscale)
    alpha = feather_alpha(mask, feather_px)[:, :, None]
    blended = frame.astype(np.float32) * (1.0 - alpha) + generated_u8.astype(np.float32) * alpha
    blended_u8 = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return np.where(alpha > 0, blended_u8, frame)


def default_feather_px(width: int, height: int) -> int:
    """About 1 % of the shorter side: invisible seams without eating small polyps."""
    return max(2, round(0.01 * min(width, height)))


# ---------------------------------------------------------------------------------------------- region
# Inpainting the region around the mask (``inpaint_area="region"``): the crop is the mask's bounding box widened
# by the padding on every side, made square where the frame allows (a model trained on square crops sees the
# same kind of view), shifted to stay inside the frame. The crop goes to the model at working size and only the
# mask is pasted back, as in whole-frame mode.
INPAINT_AREAS = ("frame", "region")
REGION_PADDING_FRACTION = 0.3  # auto padding: 30 % of the mask box's longer side on every side
MIN_REGION_PADDING = 8


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a boolean mask's True pixels, x1/y1 exclusive."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        raise InputError("mask is empty: nothing to inpaint")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def auto_region_padding(box: tuple[float, float, float, float]) -> int:
    x0, y0, x1, y1 = box
    return max(MIN_REGION_PADDING, int(round(REGION_PADDING_FRACTION * max(x1 - x0, y1 - y0))))


def region_crop(box: tuple[float, float, float, float], width: int, height: int, padding: float) -> tuple[int, int, int, int]:
    """The crop (x0, y0, x1, y1) around ``box``: its longer side + 2·padding, square unless the frame is smaller,
    centred on the box and shifted to lie inside the frame (so it always holds the whole box when the box fits)."""
    bx0, by0, bx1, by1 = box
    side = max(bx1 - bx0, by1 - by0) + 2 * padding
    crop_w = int(min(width, max(1, round(side))))
    crop_h = int(min(height, max(1, round(side))))
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    x0 = int(min(max(0, round(cx - crop_w / 2)), width - crop_w))
    y0 = int(min(max(0, round(cy - crop_h / 2)), height - crop_h))
    return x0, y0, x0 + crop_w, y0 + crop_h


def model_view(frame_w: int, frame_h: int, mask: np.ndarray, inpaint_area: str, region_padding: int | None,
               image_size: int, size_multiple: int, working_size: tuple[int, int] | None = None):
    """Where the model looks and at what size: (crop (x0, y0, x1, y1), working size (w, h)).

    ``frame``: the whole frame; ``region``: the mask's box widened by ``region_padding`` px (None: automatic,
    ``REGION_PADDING_FRACTION`` of the box's longer side). The working size keeps the crop's aspect at about
    ``image_size``² pixels, sides a multiple of ``size_multiple``."""
    if inpaint_area not in INPAINT_AREAS:
        raise InputError(f"inpaint area {inpaint_area!r} is not one of {', '.join(INPAINT_AREAS)}")
    if region_padding is not None and region_padding < 0:
        raise InputError(f"region padding must be 0 or more pixels, got {region_padding}")
    if inpaint_area == "region":
        box = mask_box(mask)
        padding = auto_region_padding(box) if region_padding is None else int(region_padding)
        crop = region_crop(box, frame_w, frame_h, padding)
    else:
        crop = (0, 0, frame_w, frame_h)
    x0, y0, x1, y1 = crop
    if working_size is None:
        working_size = choose_working_size(x1 - x0, y1 - y0, image_size, size_multiple)
    work_w, work_h = working_size
    if work_w % size_multiple or work_h % size_multiple:
        raise InputError(f"working size {work_w}×{work_h} is not a multiple of {size_multiple}")
    return crop, (work_w, work_h)


def paste_back_in_crop(frame: np.ndarray, generated: np.ndarray, mask: np.ndarray, feather_px: int,
                       crop: tuple[int, int, int, int], blend: str = "feather") -> np.ndarray:
    """paste_back of a generated crop: the crop's masked pixels change, nothing else does."""
    x0, y0, x1, y1 = crop
    if crop == (0, 0, frame.shape[1], frame.shape[0]):
        return paste_back(frame, generated, mask, feather_px, blend)
    image = frame.copy()
    image[y0:y1, x0:x1] = paste_back(np.ascontiguousarray(frame[y0:y1, x0:x1]), generated, mask[y0:y1, x0:x1],
                                     feather_px, blend)
    return image



def blend_for_prompt(prompt: str, removal_prompt: str | None) -> str:
    """The default blend of a pipeline call: the removal prompt ("Normal") removes (engine.pipelines.blending)."""
    removing = removal_prompt is not None and prompt.strip().lower() == removal_prompt.strip().lower()
    return default_blend(removing)
