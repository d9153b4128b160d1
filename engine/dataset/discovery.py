"""Finding what a curator's folder holds: frames (nested, any case of extension), the masks paired with them
by name, their split, and their existing labels.

Layouts understood without options:
- a plain folder of frames (nested folders allowed); masks from ``--masks DIR`` paired by relative path or
  file stem;
- Kvasir-SEG: ``images/`` + ``masks/`` (same base names), ``kavsir_bboxes.json`` beside them;
- Ultralytics: ``images/`` + ``labels/`` (YOLO txt with the same relative stem);
- COCO: a json with ``images`` and ``annotations`` at the top level or under ``annotations/``;
- splits as ``train/``, ``val/`` (``valid``, ``validation``), ``test/`` folders at the top of the frames
  folder, or a split file (lines ``PATH_OR_STEM SPLIT``, comma, tab or space separated; ``#`` comments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.dataset.image_reader import is_frame_file
from engine.dataset.labels import is_coco_file, read_coco, read_kvasir_bboxes
from engine.errors import InputError
from engine.masks.instances import Instance

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SPLITS = ("train", "val", "test")


@dataclass
class SourceFrame:
    path: Path
    rel: str  # relative to the frames folder, posix separators
    split: str
    mask_path: Path | None = None
    label_instances: list[Instance] | None = None  # from COCO / Kvasir bboxes; YOLO is read with the frame
    yolo_path: Path | None = None
    label_source: str | None = None

    @property
    def stem(self) -> str:
        return Path(self.rel).stem


@dataclass
class SourceSet:
    input_dir: Path
    frames_dir: Path
    masks_dir: Path | None
    frames: list[SourceFrame]
    notes: list[str] = field(default_factory=list)

    def counts_by_split(self) -> dict[str, int]:
        counts = dict.fromkeys(SPLITS, 0)
        for frame in self.frames:
            counts[frame.split] += 1
        return counts


def _relative_key(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _index_files(root: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    by_rel: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_frame_file(path):
            by_rel[_relative_key(path, root)] = path
            by_stem.setdefault(path.stem, []).append(path)
    return by_rel, by_stem


def _pair(rel_key: str, stem: str, by_rel: dict[str, Path], by_stem: dict[str, list[Path]]) -> Path | None:
    if rel_key in by_rel:
        return by_rel[rel_key]
    # Without the split folder (masks/ often is flat while images/ has train/val/test).
    parts = rel_key.split("/")
    if len(parts) > 1 and parts[0].lower() in SPLIT_ALIASES and "/".join(parts[1:]) in by_rel:
        return by_rel["/".join(parts[1:])]
    candidates = by_stem.get(stem, [])
    return candidates[0] if len(candidates) == 1 else None


def read_split_file(path: Path) -> dict[str, str]:
    """{path-or-stem: split} from a split file; InputError naming file:line for anything unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: split file not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    result = {}
    for number, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in re.split(r"[,\t]", line) if p.strip()]
        if len(parts) == 1:
            parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise InputError(f"{path}:{number}: expected 'PATH_OR_STEM SPLIT', got {line[:60]!r}")
        name, split = parts
        if split.lower() not in SPLIT_ALIASES:
            raise InputError(f"{path}:{number}: unknown split {split!r} (train, val or test)")
        result[name.replace("\\", "/")] = SPLIT_ALIASES[split.lower()]
    return result


def discover(
    input_dir: str | Path,
    masks_dir: str | Path | None = None,
    labels_file: str | Path | None = None,
    split_file: str | Path | None = None,
) -> SourceSet:
    input_dir = Path(input_dir).expanduser()
    if not input_dir.exists():
        raise InputError(f"{input_dir}: input folder not found")
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: not a folder")
    notes: list[str] = []
    frames_dir = input_dir
    if (input_dir / "images").is_dir():
        frames_dir = input_dir / "images"
        notes.append(f"frames from {frames_dir}")
    if masks_dir is not None:
        masks_dir = Path(masks_dir).expanduser()
        if not masks_dir.is_dir():
            raise InputError(f"{masks_dir}: masks folder not found")
    elif (input_dir / "masks").is_dir():
        masks_dir = input_dir / "masks"
        notes.append(f"masks from {masks_dir} (paired by name)")
    excluded = {p.resolve() for p in (masks_dir, input_dir / "labels", input_dir / "annotations") if p is not None}

    mask_by_rel, mask_by_stem = _index_files(masks_dir) if masks_dir else ({}, {})
    frames: list[SourceFrame] = []
    for path in sorted(frames_dir.rglob("*")):
        if not path.is_file() or not is_frame_file(path):
            continue
        if any(parent.resolve() in excluded for parent in path.parents):
            continue
        rel = path.relative_to(frames_dir).as_posix()
        top = rel.split("/", 1)[0].lower() if "/" in rel else ""
        split = SPLIT_ALIASES.get(top, "train")
        mask_path = _pair(_relative_key(path, frames_dir), path.stem, mask_by_rel, mask_by_stem) if masks_dir else None
        frames.append(SourceFrame(path=path, rel=rel, split=split, mask_path=mask_path))

    if split_file is not None:
        assignments = read_split_file(Path(split_file))
        kept = []
        for frame in frames:
            split = assignments.get(frame.rel) or assignments.get(Path(frame.rel).with_suffix("").as_posix()) or assignments.get(frame.stem)
            if split is not None:
                frame.split = split
                kept.append(frame)
        if len(kept) < len(frames):
            notes.append(f"{len(frames) - len(kept)} frames are not in the split file {split_file} and were left out")
        frames = kept

    _attach_labels(input_dir, frames_dir, frames, Path(labels_file) if labels_file else None, notes)
    return SourceSet(input_dir=input_dir, frames_dir=frames_dir, masks_dir=masks_dir, frames=frames, notes=notes)


def _attach_labels(input_dir: Path, frames_dir: Path, frames: list[SourceFrame], labels_file: Path | None, notes) -> None:
    by_name: dict[str, list[Instance]] = {}
    source = None
    candidates: list[Path] = []
    if labels_file is not None:
        if not labels_file.is_file():
            raise InputError(f"{labels_file}: labels file not found")
        candidates = [labels_file]
    else:
        candidates = [input_dir / "kavsir_bboxes.json"]
        candidates += sorted((input_dir / "annotations").glob("*.json")) if (input_dir / "annotations").is_dir() else []
        candidates += sorted(input_dir.glob("*.json"))
    for candidate in candidates:
        if not candidate.is_file():
            continue
        if candidate.name == "kavsir_bboxes.json" or (labels_file is not None and not is_coco_file(candidate)):
            by_name, source = read_kvasir_bboxes(candidate), f"kvasir-bboxes:{candidate.name}"
        elif is_coco_file(candidate):
            by_name, source = read_coco(candidate), f"coco:{candidate.name}"
        else:
            continue
        notes.append(f"labels from {candidate}")
        break
    yolo_dir = input_dir / "labels" if frames_dir != input_dir else None
    for frame in frames:
        if by_name:
            key = next(
                (k for k in (frame.rel, frame.path.name, frame.stem, f"images/{frame.rel}") if k in by_name), None
            )
            if key is not None:
                frame.label_instances = list(by_name[key])
                frame.label_source = source
                continue
        if yolo_dir is not None:
            txt = yolo_dir / Path(frame.rel).with_suffix(".txt")
            if txt.is_file():
                frame.yolo_path = txt
                frame.label_source = f"yolo:{txt.relative_to(input_dir).as_posix()}"
    if yolo_dir is not None and any(f.yolo_path for f in frames):
        notes.append(f"YOLO labels from {yolo_dir}")
