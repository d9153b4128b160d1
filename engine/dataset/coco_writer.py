"""COCO detection + segmentation file built from the manifest's ok records (rebuilt whole, never appended)."""

from __future__ import annotations

import json
from pathlib import Path

from engine import __version__
from engine.fileio import atomic_write_bytes
from engine.masks.instances import Instance

CATEGORIES = [{"id": 1, "name": "polyp", "supercategory": "lesion"}]


def build_coco(records: list[dict]) -> dict:
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": record["image"],
                "width": record["width"],
                "height": record["height"],
                "source_frame": record["source_frame"],
                "split": record["split"],
                "synthetic": True,
            }
        )
        for data in record["instances"]:
            instance = Instance.from_json(data)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [round(v, 2) for v in instance.bbox],
                    "area": round(instance.area or instance.bbox[2] * instance.bbox[3], 2),
                    "segmentation": [[round(v, 2) for v in poly] for poly in instance.outline_polygons()],
                    "iscrowd": 0,
                    "label_shape": instance.shape,
                    "origin": instance.origin,
                }
            )
    return {
        # No date: a rerun of the same job must give the same bytes.
        "info": {"description": "PolypForge synthetic frames", "version": __version__},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def write_coco(path: Path, records: list[dict]) -> Path:
    data = build_coco(records)
    return atomic_write_bytes(path, (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
