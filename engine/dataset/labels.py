"""Existing labels of the source frames: COCO json, YOLO txt (detect and segment rows), Kvasir-SEG's
kavsir_bboxes.json. Each reader gives Instances in pixels; a malformed file or row is an InputError that
names the file (and line)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import InputError
from engine.masks.instances import Instance, box_instance


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def is_coco_file(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list)


def read_coco(path: Path) -> dict[str, list[Instance]]:
    """Instances per image file name (as written in the file, posix separators)."""
    data = _load_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise InputError(f"{path}: not a COCO file (needs 'images' and 'annotations')")
    names = {}
    for entry in data["images"]:
        try:
            names[entry["id"]] = str(entry["file_name"]).replace("\\", "/")
        except (KeyError, TypeError):
            raise InputError(f"{path}: an image entry lacks 'id' or 'file_name'") from None
    result: dict[str, list[Instance]] = {name: [] for name in names.values()}
    for index, ann in enumerate(data["annotations"]):
        try:
            name = names[ann["image_id"]]
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: annotation #{index} has no valid image_id/bbox") from None
        segmentation = ann.get("segmentation")
        polygons = ()
        if isinstance(segmentation, list):
            polygons = tuple(tuple(float(v) for v in poly) for poly in segmentation if len(poly) >= 6 and len(poly) % 2 == 0)
        if polygons:
            instance = Instance(bbox=(x, y, w, h), shape="polygon", origin="coco", polygons=polygons,
                                area=float(ann.get("area", w * h)))
        else:  # no polygon (or RLE): the box is what we know
            instance = box_instance((x, y, w, h), "coco")
        result[name].append(instance)
    return result


def read_yolo(path: Path, width: int, height: int) -> list[Instance]:
    """Rows `cls cx cy w h` (detect) or `cls x1 y1 x2 y2 …` (segment), normalised to [0, 1]."""
    instances = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise InputError(f"{path}:{number}: not numbers: {line.strip()[:60]!r}") from None
        coords = values[1:]
        if len(values) < 5 or (len(coords) != 4 and (len(coords) < 6 or len(coords) % 2)):
            raise InputError(f"{path}:{number}: expected 'cls cx cy w h' or 'cls x1 y1 x2 y2 x3 y3 …', got {len(values)} values")
        if any(v < -0.01 or v > 1.01 for v in coords):
            raise InputError(f"{path}:{number}: coordinates must be normalised to [0, 1]")
        if len(coords) == 4:
            cx, cy, w, h = coords
            instances.append(box_instance(((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height), "yolo"))
        else:
            xs = [v * width for v in coords[0::2]]
            ys = [v * height for v in coords[1::2]]
            polygon = tuple(v for pair in zip(xs, ys) for v in pair)
            bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
            instances.append(Instance(bbox=bbox, shape="polygon", origin="yolo", polygons=(polygon,),
                                      area=_polygon_area(xs, ys)))
    return instances


def read_kvasir_bboxes(path: Path) -> dict[str, list[Instance]]:
    """Kvasir-SEG's kavsir_bboxes.json: {stem: {height, width, bbox: [{label, xmin, ymin, xmax, ymax}]}}."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an object keyed by image name")
    result = {}
    for stem, entry in data.items():
        try:
            boxes = entry["bbox"]
            result[stem] = [
                box_instance((float(b["xmin"]), float(b["ymin"]), float(b["xmax"]) - float(b["xmin"]),
                              float(b["ymax"]) - float(b["ymin"])), "kvasir-bboxes")
                for b in boxes
            ]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: entry {stem!r} is not {{bbox: [{{xmin, ymin, xmax, ymax}}]}}") from None
    return result


def _polygon_area(xs, ys) -> float:
    total = 0.0
    for i in range(len(xs)):
        j = (i + 1) % len(xs)
        total += xs[i] * ys[j] - xs[j] * ys[i]
    return abs(total) / 2.0
