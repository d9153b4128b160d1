"""COCO detection + segmentation file built from the manifest's ok records (rebuilt whole, never appended).

Written as a stream (``CocoWriter``): each record's image entry goes to the file as it comes and its
annotations to a spill file that is appended after the images, so a file of 100k images never needs them in
memory. The bytes are exactly ``json.dumps(build_coco(records), ensure_ascii=False, indent=1) + "\n"``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

from engine import __version__
from engine.fileio import atomic_writer
from engine.masks.instances import Instance

CATEGORIES = [{"id": 1, "name": "polyp", "supercategory": "lesion"}]
# No date: a rerun of the same job must give the same bytes.
INFO = {"description": "PolypForge synthetic frames", "version": __version__}


def coco_image(image_id: int, record: dict) -> dict:
    entry = {
        "id": image_id,
        "file_name": record["image"],
        "width": record["width"],
        "height": record["height"],
        "source_frame": record["source_frame"],
        "split": record["split"],
        "synthetic": True,
    }
    if record.get("source_synthetic"):  # made from an earlier job's variant, not from a real frame
        entry["source_synthetic"] = True
    return entry


def coco_annotations(image_id: int, record: dict, first_id: int) -> list[dict]:
    """The record's instances; a generated one carries the attributes its variant asked (``attributes``: a bundle
    trained with attributes, engine.jobs.attributes)."""
    annotations = []
    asked = record.get("attributes_asked")
    for data in record["instances"]:
        instance = Instance.from_json(data)
        annotations.append(
            {
                "id": first_id + len(annotations),
                "image_id": image_id,
                "category_id": 1,
                "bbox": [round(v, 2) for v in instance.bbox],
                "area": round(instance.area or instance.bbox[2] * instance.bbox[3], 2),
                "segmentation": [[round(v, 2) for v in poly] for poly in instance.outline_polygons()],
                "iscrowd": 0,
                "label_shape": instance.shape,
                "origin": instance.origin,
                **({"attributes": dict(asked)} if asked is not None and instance.origin == "generated" else {}),
            }
        )
    return annotations


def build_coco(records: list[dict]) -> dict:
    """The whole COCO dict in memory (small sets; what CocoWriter streams)."""
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        images.append(coco_image(image_id, record))
        annotations += coco_annotations(image_id, record, len(annotations) + 1)
    return {"info": INFO, "licenses": [], "images": images, "annotations": annotations, "categories": CATEGORIES}


_ENCODER = json.JSONEncoder(ensure_ascii=False, indent=1)  # what json.dumps(…, ensure_ascii=False, indent=1) uses


def _element(value) -> bytes:
    """A list element as json.dumps(indent=1) writes it two levels deep."""
    text = _ENCODER.encode(value)
    return ("  " + text.replace("\n", "\n  ")).encode("utf-8")


def _member(name: str, value) -> bytes:
    """A top-level member as json.dumps(indent=1) writes it."""
    return (f' "{name}": ' + json.dumps(value, ensure_ascii=False, indent=1).replace("\n", "\n ")).encode("utf-8")


class CocoWriter:
    """``add(record)`` per ok record, then ``finish()``; nothing replaces the file until finish succeeds."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stack = ExitStack()
        self._out = self._stack.enter_context(atomic_writer(self.path))
        self._spill = self._stack.enter_context(tempfile.TemporaryFile(dir=self.path.parent))
        self._images = 0
        self._annotations = 0
        self._out.write(b"{\n" + _member("info", INFO) + b",\n" + _member("licenses", []) + b",\n" + b' "images": [')

    def add(self, record: dict) -> None:
        self._images += 1
        self._out.write((b",\n" if self._images > 1 else b"\n") + _element(coco_image(self._images, record)))
        for annotation in coco_annotations(self._images, record, self._annotations + 1):
            self._annotations += 1
            self._spill.write((b",\n" if self._annotations > 1 else b"\n") + _element(annotation))

    def finish(self) -> Path:
        out = self._out
        out.write(b"\n ],\n" if self._images else b"],\n")
        out.write(b' "annotations": [')
        if self._annotations:
            self._spill.seek(0)
            shutil.copyfileobj(self._spill, out, 1 << 20)
            out.write(b"\n ]")
        else:
            out.write(b"]")
        out.write(b",\n" + _member("categories", CATEGORIES) + b"\n}\n")
        self._stack.close()  # renames the temp file over the target
        return self.path

    def abort(self) -> None:
        """Leave the existing file as it was (the temp file is removed)."""
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


def write_coco(path: Path, records: Iterable[dict]) -> Path:
    writer = CocoWriter(path)
    try:
        for record in records:
            writer.add(record)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()
