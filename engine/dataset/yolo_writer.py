"""Ultralytics datasets: normalised label rows and data.yaml, rebuilt whole from the manifest.

- detect (``yolo``): ``labels/<split>/<name>.txt`` with ``0 cx cy w h`` rows beside ``images/<split>/``;
  ``data.yaml`` at the output root.
- segment (``yolo-seg``): Ultralytics finds labels by swapping ``images`` for ``labels`` in the image path, so
  a segment dataset needs its own image tree: ``yolo-seg/images/<split>/`` holds hard links to the same
  files (a copy where links are not possible), ``yolo-seg/labels/<split>/`` rows ``0 x1 y1 x2 y2 …``, and
  ``yolo-seg/data.yaml``. Box-only instances are written as their box's four corners there.

Rebuilt from the manifest at every job end, but incrementally: a label file that already holds the right
rows and a link that already points at its image are left alone, changed ones are replaced atomically, and
files no record wants any more (a rejected variant's) are removed at the end. The result is the same tree,
byte for byte, as writing it afresh, without rewriting 100k files when one changed. Records are taken one at
a time (``add``), so nothing holds the whole set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.fileio import BATCHED_SYNC, atomic_write_bytes, sync_written_files
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


FSYNC_EACH_UP_TO = 64  # changed files fsynced one by one; more (a first rebuild of a big job) share one sync


class TreeUpdate:
    """A folder brought to exactly the files put into it: unchanged files kept, the rest pruned at finish."""

    def __init__(self, root: Path):
        self.root = root
        self.wanted: set[str] = set()  # posix paths relative to root
        self.changed = 0  # files written (the others already held the right bytes)

    def put_bytes(self, relative: Path, data: bytes) -> None:
        self.wanted.add(relative.as_posix())
        target = self.root / relative
        try:
            if target.stat().st_size == len(data) and target.read_bytes() == data:
                return
        except OSError:
            pass
        # The first few files are fsynced as written; past that, one sync at finish covers them all.
        atomic_write_bytes(target, data, durable=not BATCHED_SYNC or self.changed < FSYNC_EACH_UP_TO)
        self.changed += 1

    def put_link(self, relative: Path, source: Path) -> None:
        """`relative` as a hard link to `source` (a copy where links are not possible)."""
        self.wanted.add(relative.as_posix())
        target = self.root / relative
        try:
            here, there = target.stat(), source.stat()
            if (here.st_ino, here.st_dev) == (there.st_ino, there.st_dev):
                return
            if here.st_nlink == 1 and here.st_size == there.st_size and here.st_mtime_ns == there.st_mtime_ns:
                return  # the copy made where links are not possible
        except OSError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.link.tmp")
        temporary.unlink(missing_ok=True)
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copy2(source, temporary)
        os.replace(temporary, target)
        self.changed += 1

    def finish(self) -> None:
        """Make what was written durable, remove every file no put asked for, then the folders left empty
        (the root too)."""
        if self.changed > FSYNC_EACH_UP_TO:
            sync_written_files()
        if not self.root.is_dir():
            return
        for folder, _, files in os.walk(self.root, topdown=False):
            base = Path(folder)
            for name in files:
                if (base / name).relative_to(self.root).as_posix() not in self.wanted:
                    (base / name).unlink(missing_ok=True)
            try:
                os.rmdir(base)  # only succeeds when empty
            except OSError:
                pass


def _rows_bytes(rows: list[str]) -> bytes:
    return ("\n".join(rows) + ("\n" if rows else "")).encode("utf-8")


class YoloDetectWriter:
    """``labels/<split>/…txt`` and ``data.yaml``: ``add(record)`` per ok record, then ``finish()``."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.tree = TreeUpdate(self.output_dir / "labels")
        self.splits: set[str] = set()

    def add(self, record: dict) -> None:
        instances = [Instance.from_json(d) for d in record["instances"]]
        rows = detect_rows(instances, record["width"], record["height"])
        self.tree.put_bytes(Path(record["image"]).relative_to("images").with_suffix(".txt"), _rows_bytes(rows))
        self.splits.add(record["split"])

    def finish(self) -> None:
        self.tree.finish()
        atomic_write_bytes(self.output_dir / "data.yaml", _data_yaml(self.output_dir, self.splits).encode("utf-8"))


class YoloSegmentWriter:
    """``yolo-seg/images`` (hard links), ``yolo-seg/labels`` and ``yolo-seg/data.yaml``."""

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / "yolo-seg"
        self.tree = TreeUpdate(self.root)
        self.splits: set[str] = set()

    def add(self, record: dict) -> None:
        relative = Path(record["image"]).relative_to("images")
        self.tree.put_link(Path("images") / relative, self.output_dir / record["image"])
        instances = [Instance.from_json(d) for d in record["instances"]]
        rows = segment_rows(instances, record["width"], record["height"])
        self.tree.put_bytes(Path("labels") / relative.with_suffix(".txt"), _rows_bytes(rows))
        self.splits.add(record["split"])

    def finish(self) -> None:
        self.tree.wanted.add("data.yaml")
        self.tree.finish()
        atomic_write_bytes(self.root / "data.yaml", _data_yaml(self.root, self.splits).encode("utf-8"))


def write_yolo_detect(output_dir: Path, records) -> None:
    writer = YoloDetectWriter(output_dir)
    for record in records:
        writer.add(record)
    writer.finish()


def write_yolo_segment(output_dir: Path, records) -> None:
    writer = YoloSegmentWriter(output_dir)
    for record in records:
        writer.add(record)
    writer.finish()
