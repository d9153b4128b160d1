"""Pictures for the views, made off the GUI thread where they are slow: numpy → QImage, thumbnails with
their mask and label overlays, mask outlines. QImage and numpy only (no widgets, no pixmaps), so every
function here may run on a worker thread."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps
from PySide6.QtCore import QSize
from PySide6.QtGui import QImage

from engine.dataset.image_reader import read_frame, read_mask
from engine.dataset.labels import read_yolo
from engine.masks.instances import Instance

MASK_COLOUR = (40, 230, 90)  # the frame's own mask (outline in thumbnails, fill in the editor)
LABEL_COLOUR = (255, 210, 40)  # existing labels (boxes / polygons)
REGION_COLOUR = (255, 60, 200)  # what a variant inpainted
CARRIED_COLOUR = (60, 200, 255)  # labels carried into a variant
FAST_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "CMYK", "YCbCr", "1")


def to_qimage(array: np.ndarray) -> QImage:
    """A QImage that owns a copy of a uint8 (H, W, 3) RGB or (H, W) gray array."""
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    if array.ndim == 2:
        image = QImage(array.data, width, height, array.strides[0], QImage.Format.Format_Grayscale8)
    else:
        image = QImage(array.data, width, height, array.strides[0], QImage.Format.Format_RGB888)
    return image.copy()


def mask_overlay(mask: np.ndarray, colour=MASK_COLOUR, alpha: int = 110) -> QImage:
    """A transparent ARGB image, coloured where the mask is set (for drawing over a frame)."""
    height, width = mask.shape
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[mask] = (*colour, alpha)
    image = QImage(rgba.data, width, height, width * 4, QImage.Format.Format_RGBA8888)
    return image.copy()


def load_small(path: Path, size: QSize) -> tuple[np.ndarray, tuple[int, int]]:
    """(an RGB array fitting in size, the frame's full (width, height) upright); EXIF orientation applied.

    JPEGs decode at a reduced scale (draft mode); anything unusual (16-bit, odd modes, damaged data) goes
    through the engine's reader, which also gives the error message naming the file.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in FAST_MODES:
                raise ValueError(image.mode)
            width, height = image.size  # the header's size, before draft() reduces the decode
            orientation = image.getexif().get(0x0112, 1)
            image.draft("RGB", (size.width(), size.height()))
            upright = ImageOps.exif_transpose(image) if orientation != 1 else image
            small = upright.convert("RGB")
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        small.thumbnail((size.width(), size.height()), Image.Resampling.BILINEAR)
        return np.asarray(small), (width, height)
    except Exception:  # noqa: BLE001 - any problem: the engine's reader decides and names it
        frame = read_frame(path)
        full_size = (frame.shape[1], frame.shape[0])
        factor = min(size.width() / full_size[0], size.height() / full_size[1], 1.0)
        small = cv2.resize(frame, (max(1, round(full_size[0] * factor)), max(1, round(full_size[1] * factor))),
                           interpolation=cv2.INTER_AREA)
        return small, full_size


def draw_instances(canvas: np.ndarray, instances: list[Instance], scale: float, colour, thickness: int = 1) -> None:
    for instance in instances:
        for polygon in instance.outline_polygons():
            points = np.round(np.asarray(polygon, np.float64).reshape(-1, 2) * scale).astype(np.int32)
            cv2.polylines(canvas, [points], True, colour, thickness, cv2.LINE_AA)


def draw_mask_outline(canvas: np.ndarray, mask: np.ndarray, colour, thickness: int = 1) -> None:
    """Outline of a boolean mask (any size) drawn on canvas (resized to the canvas first)."""
    height, width = canvas.shape[:2]
    if mask.shape != (height, width):
        mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, colour, thickness, cv2.LINE_AA)


def frame_labels(label_instances, yolo_path: Path | None, width: int, height: int) -> list[Instance]:
    if label_instances:
        return list(label_instances)
    if yolo_path is not None:
        return read_yolo(yolo_path, width, height)
    return []


def frame_thumbnail(path: Path, size: QSize, mask_path: Path | None, label_instances, yolo_path: Path | None) -> QImage:
    """A thumbnail of a frame with its mask outlined (green) and its labels drawn (yellow)."""
    small, (width, height) = load_small(path, size)
    canvas = np.ascontiguousarray(small.copy())
    scale = canvas.shape[1] / width
    if mask_path is not None:
        try:
            draw_mask_outline(canvas, read_mask(mask_path), MASK_COLOUR, 2)
        except Exception:  # noqa: BLE001 - a bad mask shows as a red border; the editor names the problem
            cv2.rectangle(canvas, (0, 0), (canvas.shape[1] - 1, canvas.shape[0] - 1), (230, 40, 40), 3)
    try:
        draw_instances(canvas, frame_labels(label_instances, yolo_path, width, height), scale, LABEL_COLOUR, 1)
    except Exception:  # noqa: BLE001 - a bad label file: red border too
        cv2.rectangle(canvas, (0, 0), (canvas.shape[1] - 1, canvas.shape[0] - 1), (230, 40, 40), 3)
    return to_qimage(canvas)


def variant_outlines(record: dict) -> tuple[list[Instance], list[Instance]]:
    """(the region a variant inpainted: generated + removed instances, the labels carried into it)."""
    instances = [Instance.from_json(i) for i in record.get("instances", [])]
    removed = [Instance.from_json(i) for i in record.get("removed", [])]
    region = [i for i in instances if i.origin == "generated"] + removed
    carried = [i for i in instances if i.origin != "generated"]
    return region, carried


def variant_picture(path: Path, record: dict, size: QSize | None = None, carried: bool = True) -> QImage:
    """A variant (or its source frame) with the inpainted region outlined; scaled to fit size if given."""
    frame = read_frame(path)
    height, width = frame.shape[:2]
    scale = 1.0
    if size is not None:
        scale = min(size.width() / width, size.height() / height, 1.0)
        if scale < 1.0:
            frame = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
    canvas = np.ascontiguousarray(frame.copy())
    region, kept = variant_outlines(record)
    thickness = max(1, round(2 * max(canvas.shape[:2]) / 512))
    if carried:
        draw_instances(canvas, kept, scale, CARRIED_COLOUR, max(1, thickness - 1))
    draw_instances(canvas, region, scale, REGION_COLOUR, thickness)
    return to_qimage(canvas)


def qimage_to_array(image: QImage) -> np.ndarray:
    """An (H, W, 3) uint8 RGB copy of a QImage (tests, screenshots)."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height = rgb.width(), rgb.height()
    data = np.frombuffer(rgb.constBits(), np.uint8, count=rgb.bytesPerLine() * height)
    return data.reshape(height, rgb.bytesPerLine())[:, : width * 3].reshape(height, width, 3).copy()
