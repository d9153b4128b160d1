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

Synthetic frames never come back as real ones: the walk never descends into the job's own output folder nor
into any folder a PolypForge job wrote (it holds job.json, manifest.jsonl or job.lock), and an input folder
that is such an output is refused. With ``include_synthetic`` a curator builds on earlier outputs on
purpose: their frames are then exactly the accepted variants their manifests list (not their masks, YOLO
copies or contact sheets), labelled with the manifest's instances and carrying which manifest line made them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.dataset.image_reader import is_frame_file
from engine.dataset.job_folder import marks_job_output, is_job_output
from engine.dataset.labels import is_coco_file, read_coco, read_kvasir_bboxes
from engine.dataset.manifest import Manifest
from engine.errors import InputError
from engine.masks.instances import Instance

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SPLITS = ("train", "val", "test")
LAYOUT_FOLDERS = ("images", "masks", "labels", "annotations")  # names that make an input a dataset layout
SYNTHETIC_ORIGIN = "manifest"  # origin of a synthetic frame's labels: its PolypForge manifest line


@dataclass
class SourceFrame:
    path: Path
    rel: str  # relative to the frames folder, posix separators
    split: str
    mask_path: Path | None = None
    label_instances: list[Instance] | None = None  # from COCO / Kvasir bboxes; YOLO is read with the frame
    yolo_path: Path | None = None
    label_source: str | None = None
    made_by: dict | None = None  # a synthetic frame: the manifest line of the job that generated it

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


@dataclass
class _Walk:
    """Frame files under a folder, in sorted order, and the job output folders the walk did not enter."""

    files: list[Path]
    job_outputs: list[Path]
    skipped: list[Path]  # excluded folders it met (the job's own output, masks/, labels/ …)


def _walk_frames(root: Path, excluded: set[Path]) -> _Walk:
    """Like ``sorted(p for p in root.rglob("*") if p.is_file() and is_frame_file(p))`` (symlinked folders
    are not entered either), but never descending into an excluded folder (compared resolved) or a job's
    output folder: one directory listing per folder and one resolve per folder, not per file."""
    walk = _Walk([], [], [])
    if any(folder in excluded for folder in (root.resolve(), *root.resolve().parents)):
        walk.skipped.append(root)
        return walk
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            continue
        if folder != root and marks_job_output(folder, {entry.name for entry in entries}):
            walk.job_outputs.append(folder)
            continue
        for entry in entries:
            try:
                if entry.is_dir():
                    if entry.is_symlink():
                        continue
                    child = Path(entry.path)
                    if child.resolve() in excluded:
                        walk.skipped.append(child)
                    else:
                        pending.append(child)
                elif entry.is_file():
                    path = Path(entry.path)
                    if is_frame_file(path):
                        walk.files.append(path)
            except OSError:
                continue
    walk.files.sort()
    walk.job_outputs.sort()
    return walk


def _index_files(root: Path, excluded: set[Path]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    by_rel: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for path in _walk_frames(root, excluded).files:
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


def _resolved(path: Path) -> Path:
    return Path(path).expanduser().resolve()


def check_output_placement(input_dir: str | Path, output_dir: str | Path, masks_dir: str | Path | None = None) -> None:
    """InputError (one line) for an output folder that would end up holding the job's own input: the input
    folder itself, a folder above it (or above a masks folder given apart), or a folder right inside the
    input whose name changes how the input is read (images/, masks/, labels/, annotations/). Any other
    folder inside the input is fine: discovery does not enter it."""
    output = _resolved(output_dir)
    inputs = [("input", _resolved(input_dir))]
    if masks_dir is not None:
        inputs.append(("masks", _resolved(masks_dir)))
    for what, folder in inputs:
        if output == folder:
            raise InputError(f"{output_dir}: the output folder is the {what} folder: the next job would read "
                             f"its variants as real frames; write to another folder (one inside it, e.g. "
                             f"{Path(output_dir) / 'augmented'}, is fine)")
        if folder.is_relative_to(output):
            raise InputError(f"{output_dir}: the output folder holds the {what} folder {folder}: the job would "
                             "write its dataset around its own frames; write to a folder that is not above it")
    inside = inputs[0][1]
    if output.parent == inside and output.name.lower() in LAYOUT_FOLDERS:
        raise InputError(f"{output_dir}: an output folder named {output.name}/ inside the input would make "
                         "the input read as a dataset layout (images/ + masks/); choose another name, e.g. "
                         f"{inside / 'augmented'}")


def _synthetic_frames(output: Path, frames_dir: Path, input_dir: Path) -> list[SourceFrame]:
    """The accepted variants a PolypForge job output's manifest lists, as frames that say what made them."""
    manifest = Manifest(output)
    where = manifest.path.relative_to(input_dir).as_posix() if manifest.path.is_relative_to(input_dir) else str(manifest.path)
    frames = []
    for line, record in manifest.numbered_records():
        if record.get("status") != "ok" or not isinstance(record.get("image"), str):
            continue
        path = output / record["image"]
        if not path.is_file() or not path.is_relative_to(frames_dir):
            continue
        try:
            labels = [Instance.from_json(d) for d in record.get("instances", [])]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{manifest.path}:{line}: the instances of {record['image']} cannot be read") from None
        labels = [Instance(i.bbox, i.shape, SYNTHETIC_ORIGIN, i.polygons, i.area) for i in labels]
        made_by = {"manifest": where, "line": line, "key": record.get("key"), "image": record["image"],
                   "source_frame": record.get("source_frame"),
                   "bundle_id": record.get("bundle_id"), "seed": record.get("seed")}
        split = record.get("split") if record.get("split") in SPLITS else "train"
        frames.append(SourceFrame(path=path, rel=path.relative_to(frames_dir).as_posix(), split=split,
                                  label_instances=labels, label_source=f"polypforge-manifest:{where}", made_by=made_by))
    return frames


def discover(
    input_dir: str | Path,
    masks_dir: str | Path | None = None,
    labels_file: str | Path | None = None,
    split_file: str | Path | None = None,
    exclude: tuple[str | Path, ...] | list[str | Path] = (),
    include_synthetic: bool = False,
) -> SourceSet:
    """The frames of a folder. `exclude`: folders never entered (a job passes its own output folder).
    `include_synthetic`: also take the variants of earlier PolypForge outputs found in (or being) the input."""
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
    input_is_output = is_job_output(input_dir) or (frames_dir != input_dir and is_job_output(frames_dir))
    if input_is_output and not include_synthetic:
        raise InputError(f"{input_dir}: is the output of a PolypForge job (job.json, manifest.jsonl): its frames are "
                         "synthetic. Give the folder of real frames, or --include-synthetic to build on these variants")
    if masks_dir is not None:
        masks_dir = Path(masks_dir).expanduser()
        if not masks_dir.is_dir():
            raise InputError(f"{masks_dir}: masks folder not found")
    elif (input_dir / "masks").is_dir() and not input_is_output:  # a job output's masks/ are instance maps
        masks_dir = input_dir / "masks"
        notes.append(f"masks from {masks_dir} (paired by name)")
    own_outputs = {_resolved(Path(p)) for p in exclude}
    excluded = {p.resolve() for p in (masks_dir, input_dir / "labels", input_dir / "annotations") if p is not None}
    excluded |= own_outputs

    mask_by_rel, mask_by_stem = _index_files(masks_dir, own_outputs) if masks_dir else ({}, {})
    frames: list[SourceFrame] = []
    if input_is_output:
        walk = _Walk([], [input_dir if is_job_output(input_dir) else frames_dir], [])
    else:
        walk = _walk_frames(frames_dir, excluded)
    for folder in walk.skipped:
        if folder.resolve() in own_outputs:
            notes.append(f"{folder}: the job's own output folder is inside the input; its frames are not read")
    synthetic: dict[Path, SourceFrame] = {}
    if walk.job_outputs and include_synthetic:
        for folder in walk.job_outputs:
            found = _synthetic_frames(folder, frames_dir, input_dir)
            synthetic.update((f.path, f) for f in found)
            notes.append(f"{len(found)} synthetic frames (accepted variants) from the PolypForge output {folder}")
    elif walk.job_outputs:
        listed = ", ".join(str(p) for p in walk.job_outputs[:3]) + (" …" if len(walk.job_outputs) > 3 else "")
        notes.append(f"{len(walk.job_outputs)} folder(s) holding a PolypForge job's output (synthetic frames) were "
                     f"not read: {listed}; --include-synthetic builds on them")
    for path in sorted([*walk.files, *synthetic]):
        if path in synthetic:
            frames.append(synthetic[path])
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

    if not input_is_output:  # a job output's annotations/ and labels/ are its own, already in its manifest
        _attach_labels(input_dir, frames_dir, [f for f in frames if f.made_by is None],
                       Path(labels_file) if labels_file else None, notes)
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
