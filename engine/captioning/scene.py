"""A frame made ready for measuring: resized to the analysis scale, in CIE L*a*b*, with its field of view,
its specular highlights and one mask per polyp.

Every measure of engine.captioning.attributes is taken on this, so that thresholds mean the same for a
332-pixel frame and a 1920-pixel one:

- **analysis scale**: the frame is resized (area-averaged down, bilinear up) so that its longer side is
  ``ANALYSIS_SIDE`` = 512 px; masks are resized the same way and thresholded at one half.
- **L*a*b***: OpenCV's ``COLOR_RGB2Lab`` on float RGB in [0, 1] (sRGB gamma removed, D65 white): L* in
  0..100, a* (green − / red +) and b* (blue − / yellow +) about −100..100.
- **field of view**: endoscopy frames have a black border (often an octagon) carrying white text and, in
  some Kvasir frames, a blacked-out or green position box. The field of view is the largest connected
  region whose brightest channel exceeds ``FOV_MIN_LEVEL`` (20 of 255), opened with a
  ``FOV_OPEN_PX`` (7 px) square so thin text strokes fall away, with its holes filled (a dark lumen inside
  the view is part of it), plus the polyps' masks.
- **specular highlights**: pixels whose darkest channel is at least ``SPECULAR_MIN_LEVEL`` (215 of 255):
  white light reflected by wet mucosa, which says nothing of the tissue's colour. They are dilated by
  ``SPECULAR_HALO_PX`` (2 px) so their JPEG halo is left out of colour measures too. Texture measures use
  a copy in which they are filled in from their surroundings (OpenCV's Telea inpainting, radius
  ``FILL_RADIUS_PX`` = 3 px): a highlight's edge is the sharpest thing in a frame and is not texture.
- **polyps**: the mask is split into 8-connected components (engine.masks.instances.split_instances,
  largest first): polyp 1 is the largest.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.errors import InputError
from engine.masks.geometry import binarize
from engine.masks.instances import split_instances

ANALYSIS_SIDE = 512
FOV_MIN_LEVEL = 20
FOV_OPEN_PX = 7
SPECULAR_MIN_LEVEL = 215
SPECULAR_HALO_PX = 2
FILL_RADIUS_PX = 3


@dataclass
class Scene:
    rgb: np.ndarray  # uint8 (h, w, 3) at the analysis scale
    lab: np.ndarray  # float32 (h, w, 3): L*, a*, b*
    lab_filled: np.ndarray  # the same with the highlights filled in from around them (texture measures)
    fov: np.ndarray  # bool (h, w): the field of view
    specular: np.ndarray  # bool (h, w): highlights, halo included
    polyps: list[np.ndarray]  # bool (h, w) per polyp, largest first
    polyps_full: list[np.ndarray]  # the same polyps at the frame's own resolution
    scale: float  # analysis pixels per frame pixel

    @property
    def all_polyps(self) -> np.ndarray:
        union = np.zeros(self.fov.shape, bool)
        for polyp in self.polyps:
            union |= polyp
        return union


def analysis_size(width: int, height: int) -> tuple[int, int]:
    scale = ANALYSIS_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB → float32 CIE L*a*b* (OpenCV, D65)."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def square(px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_RECT, (2 * px + 1, 2 * px + 1))


def disc(px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), disc(px)).astype(bool)


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask.copy()
    return cv2.erode(mask.astype(np.uint8), disc(px), borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def field_of_view(rgb: np.ndarray) -> np.ndarray:
    lit = (rgb.max(axis=2) > FOV_MIN_LEVEL).astype(np.uint8)
    lit = cv2.morphologyEx(lit, cv2.MORPH_OPEN, square(FOV_OPEN_PX // 2))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(lit, connectivity=8)
    if count <= 1:
        return np.ones(lit.shape, bool)  # nothing lit: measure the whole frame rather than nothing
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    # fill holes: flood the outside from a padded border; what the flood cannot reach is inside
    padded = np.pad(region, 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return region.astype(bool) | holes


def specular_highlights(rgb: np.ndarray) -> np.ndarray:
    return dilate(rgb.min(axis=2) >= SPECULAR_MIN_LEVEL, SPECULAR_HALO_PX)


def _resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    interpolation = cv2.INTER_AREA if width < rgb.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def _resize_polyp(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    small = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) >= 0.5
    if not small.any():  # a polyp smaller than an analysis pixel keeps the pixel at its centroid
        rows, cols = np.nonzero(mask)
        small[min(height - 1, int(rows.mean() * height / mask.shape[0])),
              min(width - 1, int(cols.mean() * width / mask.shape[1]))] = True
    return small


def make_scene(frame: np.ndarray, mask: np.ndarray) -> Scene:
    """The frame (uint8 RGB) and its mask (any binary image of the same size) at the analysis scale."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"a frame must be uint8 RGB (H, W, 3), got {frame.dtype} {frame.shape}")
    mask = binarize(mask)
    if mask.shape != frame.shape[:2]:
        raise InputError(f"the mask is {mask.shape[1]}×{mask.shape[0]} but the frame is "
                         f"{frame.shape[1]}×{frame.shape[0]}")
    height, width = frame.shape[:2]
    work_w, work_h = analysis_size(width, height)
    rgb = _resize_rgb(frame, work_w, work_h)
    polyps_full = split_instances(mask)
    polyps = [_resize_polyp(p, work_w, work_h) for p in polyps_full]
    fov = field_of_view(rgb)
    for polyp in polyps:
        fov |= polyp
    specular = specular_highlights(rgb)
    filled = cv2.inpaint(rgb, specular.astype(np.uint8), FILL_RADIUS_PX, cv2.INPAINT_TELEA) if specular.any() else rgb
    return Scene(rgb=rgb, lab=to_lab(rgb), lab_filled=to_lab(filled), fov=fov, specular=specular, polyps=polyps,
                 polyps_full=polyps_full, scale=work_w / width)
