"""Polyp instances: a box and, when the outline is known, polygons; made from masks or read from labels.

One mask image may hold several polyps: they are split by 8-connected components (specks under
``MIN_INSTANCE_PIXELS`` are JPEG noise and dropped). Polygons come from the component's outer contour.
A box-only instance (a box-masked generation, a YOLO detect row, Kvasir's bounding boxes) says so with
``shape == "box"``: its outline is unknown and no polygon is invented for it except where a format
demands one (then it is the box's four corners).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

MIN_INSTANCE_PIXELS = 16


@dataclass(frozen=True)
class Instance:
    bbox: tuple[float, float, float, float]  # x, y, width, height in pixels (COCO convention)
    shape: str  # "polygon" (outline known) or "box"
    origin: str  # "mask", "coco", "yolo", "kvasir-bboxes", "generated"
    polygons: tuple[tuple[float, ...], ...] = field(default=())  # each x0, y0, x1, y1, …; ≥ 3 points
    area: float = 0.0

    def to_json(self) -> dict:
        return {
            "bbox": [round(v, 2) for v in self.bbox],
            "shape": self.shape,
            "origin": self.origin,
            "polygons": [[round(v, 2) for v in poly] for poly in self.polygons],
            "area": round(self.area, 2),
        }

    @classmethod
    def from_json(cls, data: dict) -> "Instance":
        return cls(
            bbox=tuple(float(v) for v in data["bbox"]),
            shape=data["shape"],
            origin=data["origin"],
            polygons=tuple(tuple(float(v) for v in poly) for poly in data.get("polygons", ())),
            area=float(data.get("area", 0.0)),
        )

    def outline_polygons(self) -> tuple[tuple[float, ...], ...]:
        """Polygons for formats that need one: the real outline, or the box's corners for a box."""
        if self.polygons:
            return self.polygons
        x, y, w, h = self.bbox
        return ((x, y, x + w, y, x + w, y + h, x, y + h),)

    def raster(self, height: int, width: int) -> np.ndarray:
        """The instance as a boolean mask (its polygons filled, or its box)."""
        canvas = np.zeros((height, width), np.uint8)
        for poly in self.outline_polygons():
            points = np.round(np.asarray(poly, np.float64).reshape(-1, 2)).astype(np.int32)
            cv2.fillPoly(canvas, [points], 1)
        return canvas.astype(bool)


def bbox_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)


def mask_polygons(mask: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """Outer contours of a mask as polygons of at least 3 points (pixel-corner coordinates)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        simplified = cv2.approxPolyDP(contour, 0.75, True)
        points = simplified.reshape(-1, 2).astype(np.float64)
        if len(points) < 3:
            x, y, w, h = cv2.boundingRect(contour)
            points = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float64)
        polygons.append(tuple(points.reshape(-1).tolist()))
    return tuple(polygons)


def split_instances(mask: np.ndarray) -> list[np.ndarray]:
    """One boolean mask per 8-connected component, largest first, specks dropped."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    components = [
        (stats[label, cv2.CC_STAT_AREA], label)
        for label in range(1, count)
        if stats[label, cv2.CC_STAT_AREA] >= MIN_INSTANCE_PIXELS
    ]
    components.sort(key=lambda item: (-item[0], item[1]))
    return [labels == label for _, label in components]


def instance_from_mask(mask: np.ndarray, origin: str) -> Instance:
    return Instance(
        bbox=bbox_of(mask), shape="polygon", origin=origin, polygons=mask_polygons(mask), area=float(mask.sum())
    )


def instances_from_mask(mask: np.ndarray, origin: str) -> list[Instance]:
    return [instance_from_mask(component, origin) for component in split_instances(mask)]


def box_instance(bbox: tuple[float, float, float, float], origin: str) -> Instance:
    return Instance(bbox=tuple(float(v) for v in bbox), shape="box", origin=origin, area=float(bbox[2] * bbox[3]))


def padded_box_mask(bbox: tuple[float, float, float, float], pad: int, height: int, width: int) -> np.ndarray:
    """A box widened by `pad` pixels on every side and clipped to the frame, as a boolean mask."""
    x, y, w, h = bbox
    left, top = max(0, int(np.floor(x - pad))), max(0, int(np.floor(y - pad)))
    right, bottom = min(width, int(np.ceil(x + w + pad))), min(height, int(np.ceil(y + h + pad)))
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True
    return mask


def overlap_fraction(instance: Instance, region: np.ndarray) -> float:
    """How much of an instance lies inside a region (0..1)."""
    raster = instance.raster(*region.shape)
    total = raster.sum()
    return float((raster & region).sum() / total) if total else 0.0
