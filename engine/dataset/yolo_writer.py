"""Ultralytics datasets: normalised label rows and data.yaml, rebuilt whole from the manifest.

- detect (``yolo``): ``labels/<split>/<name>.txt`` with ``0 cx cy w h`` rows beside ``images/<split>/``;
  ``data.yaml`` at the output root.
- segment (``yolo-seg``): Ultralytics finds labels by swapping ``images`` for ``labels`` in the image path, so
  a segment dataset needs its own image tree: ``yolo-seg/images/<split>/`` holds hard links to the same
  files (a copy where links are not possible), ``yolo-seg/labels/<split>/`` rows ``0 x1 y1 x2 y2 …``, and
  ``yolo-seg/data.yaml``. Box-only instances are written as their box's four corners there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.fileio import atomic_write_bytes
from engine.masks.instances import Instance


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def detect_rows(instances: list[Instance], width: int, height: int) -> list[str]:
    rows = []
    for inst in instances:
        x, y, w, h = inst.bbox
        x0, y0 = _clip(x / width), _clip(y / height)
        x1, y1 = _clip((x + w) / width), _clip((y + h) / height)
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            continue
        rows.append(f"0 {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}")
    return rows


def segment_rows(instances: list[Instance], width: int, height: int) -> list[str]:
    rows = []
    for inst in instances:
        for poly in inst.outline_polygons():
            coords = [f"{_clip(v / (width if i % 2 == 0 else height)):.6f}" for i, v in enumerate(poly)]
            if len(coords) >= 6:
                rows.append("0 " + " ".join(coords))
    return rows


def _data_yaml(root: Path, splits: set[str]) -> str:
    lines = [
        "# Ultralytics dataset written by PolypForge",
        f"path: {root.resolve().as_posix()}",
        "train: images/train",
    ]
    if "val" in splits:
        lines.append("val: images/val")
    else:
        lines.append("val: images/train  # no validation frames here: point this at your real validation set")
    if "test" in splits:
        lines.append("test: images/test")
    lines += ["names:", "  0: polyp", ""]
    return "\n".join(lines)


def _replace_tree(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)


def write_yolo_detect(output_dir: Path, records: list[dict]) -> None:
    labels_root = output_dir / "labels"
    _replace_tree(labels_root)
    for record in records:
        instances = [Instance.from_json(d) for d in record["instances"]]
        rows = detect_rows(instances, record["width"], record["height"])
        target = labels_root / Path(record["image"]).relative_to("images").with_suffix(".txt")
        atomic_write_bytes(target, ("\n".join(rows) + ("\n" if rows else "")).encode("utf-8"))
    splits = {r["split"] for r in records}
    atomic_write_bytes(output_dir / "data.yaml", _data_yaml(output_dir, splits).encode("utf-8"))


def write_yolo_segment(output_dir: Path, records: list[dict]) -> None:
    root = output_dir / "yolo-seg"
    _replace_tree(root)
    for record in records:
        relative = Path(record["image"]).relative_to("images")
        link = root / "images" / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(output_dir / record["image"], link)
        except OSError:
            shutil.copy2(output_dir / record["image"], link)
        instances = [Instance.from_json(d) for d in record["instances"]]
        rows = segment_rows(instances, record["width"], record["height"])
        atomic_write_bytes(root / "labels" / relative.with_suffix(".txt"), ("\n".join(rows) + ("\n" if rows else "")).encode("utf-8"))
    splits = {r["split"] for r in records}
    atomic_write_bytes(root / "data.yaml", _data_yaml(root, splits).encode("utf-8"))
