"""Frames + masks for training and testing the judge, held in memory at a small cache size.

Where they come from:

- ``from_folder(DIR)``: any layout the batch job reads (engine.dataset.discovery: Kvasir-SEG images/ + masks/,
  a folder with --masks, nested folders, COCO / YOLO / Kvasir box labels). A frame's target is its mask file;
  without one, its polygon labels rasterised (box labels as boxes); a frame with neither is polyp-free
  (an all-background target: the judge must learn to say "none" too).
- ``from_polypforge_output(DIR)``: the ``ok`` variants of a batch job's output; the target is the union of
  the variant's labelled instances (generated + carried; a box-labelled variant teaches a box).

Each frame is decoded once and resized whole to ``cache`` × ``cache`` (uint8 image, float32 mask coverage),
about 77 KB a frame at 160 px. A frame that cannot be read is left out with a note naming it: one bad file
never stops a run. Every frame keeps its source sha256 (the leak check of ``evaluate``).

``holdout(names, fraction)``: a deterministic split by the sha256 of each file stem (not its path; the
trainer's rule, engine.dataset.splits): the same frames are held out wherever the folder lives.

``augment``: a random crop (60–100 % of the area, aspect 0.8–1.25; sometimes a crop chosen to miss the
polyp, so real mucosa teaches "no polyp"), resized to the training size, flips, 90° rotations, brightness /
contrast / per-channel colour gain. Drawn from the generator it is given: the batch of a step is a pure
function of (seed, step).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.dataset import splits
from engine.errors import InputError, PolypForgeError
from engine.judge.preprocess import resize_frame, resize_mask_fraction

DEFAULT_CACHE = 160
HOLDOUT_FRACTION = 0.10
BACKGROUND_CROP_PROBABILITY = 0.15


@dataclass
class SegmentationSet:
    """N frames at cache size: images uint8 (N, C, C, 3), masks float32 (N, C, C) coverage in [0, 1]."""

    names: list[str]  # relative paths (for a PolypForge output: the variant image path)
    images: np.ndarray
    masks: np.ndarray
    sha256: list[str]
    source_sha256: list[str | None]  # a variant's source frame; None for real frames
    paths: list[Path]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices: Sequence[int]) -> "SegmentationSet":
        idx = list(indices)
        return SegmentationSet([self.names[i] for i in idx], self.images[idx], self.masks[idx],
                               [self.sha256[i] for i in idx], [self.source_sha256[i] for i in idx],
                               [self.paths[i] for i in idx], list(self.notes))

    def digest(self) -> str:
        """sha256 over the frames' names and content hashes: what a run was trained on."""
        text = "\n".join(f"{n} {s}" for n, s in zip(self.names, self.sha256))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def concatenate(sets: Sequence[SegmentationSet]) -> SegmentationSet:
    sets = [s for s in sets if len(s)]
    if not sets:
        raise InputError("no frames to train on")
    return SegmentationSet(
        [n for s in sets for n in s.names], np.concatenate([s.images for s in sets]),
        np.concatenate([s.masks for s in sets]), [x for s in sets for x in s.sha256],
        [x for s in sets for x in s.source_sha256], [p for s in sets for p in s.paths],
        [n for s in sets for n in s.notes])


def file_sha256(path: Path) -> str:
    from engine.bundle.hashing import sha256_of_file

    return sha256_of_file(path)


def _load(entries: list[tuple[str, Path, Callable[[int, int], np.ndarray], str | None]], cache: int,
          progress: Callable[[int, int], None] | None) -> SegmentationSet:
    from engine.dataset.image_reader import read_frame

    names, images, masks, hashes, sources, paths, notes = [], [], [], [], [], [], []
    for done, (name, path, target, source) in enumerate(entries, start=1):
        try:
            frame = read_frame(path)
            mask = target(frame.shape[0], frame.shape[1])
            if mask.shape != frame.shape[:2]:
                raise InputError(f"{path}: its mask is {mask.shape[1]}×{mask.shape[0]}, the frame "
                                 f"{frame.shape[1]}×{frame.shape[0]}")
        except PolypForgeError as exc:
            notes.append(f"left out: {exc}")
            continue
        names.append(name)
        images.append(resize_frame(frame, cache))
        masks.append(resize_mask_fraction(mask, cache))
        hashes.append(file_sha256(path))
        sources.append(source)
        paths.append(path)
        if progress is not None:
            progress(done, len(entries))
    empty_images = np.zeros((0, cache, cache, 3), np.uint8)
    return SegmentationSet(names, np.stack(images) if images else empty_images,
                           np.stack(masks).astype(np.float32) if masks else np.zeros((0, cache, cache), np.float32),
                           hashes, sources, paths, notes)


def _union_of(instances, height: int, width: int) -> np.ndarray:
    target = np.zeros((height, width), bool)
    for instance in instances:
        target |= instance.raster(height, width)
    return target


def folder_entries(folder: str | Path, masks: str | Path | None = None, labels: str | Path | None = None,
                   splits: Sequence[str] | None = None):
    """(name, path, target(h, w), None) per frame of a folder, through the batch job's discovery."""
    from engine.dataset.discovery import discover
    from engine.dataset.image_reader import read_mask
    from engine.dataset.labels import read_yolo

    sources = discover(folder, masks, labels)
    entries = []
    for frame in sources.frames:
        if splits is not None and frame.split not in splits:
            continue

        def target(h, w, frame=frame):
            if frame.mask_path is not None:
                return read_mask(frame.mask_path)
            if frame.label_instances is not None:
                return _union_of(frame.label_instances, h, w)
            if frame.yolo_path is not None:
                return _union_of(read_yolo(frame.yolo_path, w, h), h, w)
            return np.zeros((h, w), bool)

        entries.append((frame.rel, frame.path, target, None))
    return sources, entries


def hashed_entries(folder: str | Path) -> tuple[SegmentationSet, list]:
    """A test folder as (its frames' names and sha256 — no pixels: enough for the leak check —, its scoring entries
    for engine.judge.accuracy.score_frames)."""
    _, entries = folder_entries(folder)
    if not entries:
        raise InputError(f"{folder}: no frames found (jpg, jpeg, png, bmp, tif, tiff)")
    return SegmentationSet([e[0] for e in entries], None, None, [file_sha256(e[1]) for e in entries],
                           [None] * len(entries), [e[1] for e in entries]), entries


def from_folder(folder: str | Path, cache: int = DEFAULT_CACHE, masks=None, labels=None, splits=None,
                progress: Callable[[int, int], None] | None = None) -> SegmentationSet:
    sources, entries = folder_entries(folder, masks, labels, splits)
    if not entries:
        raise InputError(f"{sources.frames_dir}: no frames found (jpg, jpeg, png, bmp, tif, tiff)")
    data = _load(entries, cache, progress)
    data.notes[:0] = sources.notes
    if not len(data):
        raise InputError(f"{sources.frames_dir}: none of its {len(entries)} frames could be read "
                         f"({data.notes[-1] if data.notes else ''})")
    return data


def from_polypforge_output(folder: str | Path, cache: int = DEFAULT_CACHE,
                           progress: Callable[[int, int], None] | None = None) -> SegmentationSet:
    """The ok variants of a batch job's output folder (read through manifest.jsonl)."""
    from engine.dataset.manifest import Manifest
    from engine.masks.instances import Instance

    root = Path(folder)
    manifest = Manifest(root)
    if not manifest.path.is_file():
        raise InputError(f"{root}: not a PolypForge output (no {manifest.path.name}); --synthetic takes the "
                         "folder a batch job wrote")
    records, damaged = manifest.load()
    entries = []
    for record in records:
        if record.get("status") != "ok" or not record.get("image"):
            continue
        instances = [Instance.from_json(i) for i in record.get("instances", [])]
        entries.append((record["image"], root / record["image"],
                        lambda h, w, instances=instances: _union_of(instances, h, w), record.get("source_sha256")))
    if not entries:
        raise InputError(f"{manifest.path}: no ok variants")
    data = _load(entries, cache, progress)
    if damaged:
        data.notes.append(f"{manifest.path}: {damaged} damaged line(s) skipped")
    return data


def holdout(names: Sequence[str], fraction: float = HOLDOUT_FRACTION, by_rank: bool = False) -> tuple[list[int], list[int]]:
    """(kept, held out) indices by the trainer's hash rule (engine.dataset.splits.holdout), at the judge's
    default fraction."""
    return splits.holdout(names, fraction, by_rank)


# ---------------------------------------------------------------------------------------------- augmentation
def _crop_box(rng: np.random.Generator, side: int, mask: np.ndarray, background: bool) -> tuple[int, int, int, int]:
    best = None
    for _ in range(8 if background else 1):
        area = rng.uniform(0.6, 1.0) if not background else rng.uniform(0.25, 0.5)
        aspect = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        w = int(round(min(side, side * np.sqrt(area * aspect))))
        h = int(round(min(side, side * np.sqrt(area / aspect))))
        x = int(rng.integers(0, side - w + 1))
        y = int(rng.integers(0, side - h + 1))
        covered = float(mask[y:y + h, x:x + w].mean())
        if best is None or covered < best[0]:
            best = (covered, (x, y, w, h))
        if not background or covered < 0.01:
            break
    return best[1]


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, size: int,
            background_probability: float = BACKGROUND_CROP_PROBABILITY) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (uint8 (size, size, 3), float32 (size, size)) pair from a cached frame and its mask."""
    side = image.shape[0]
    background = bool(mask.max(initial=0.0) > 0 and rng.random() < background_probability)
    x, y, w, h = _crop_box(rng, side, mask, background)
    crop = cv2.resize(image[y:y + h, x:x + w], (size, size), interpolation=cv2.INTER_AREA if w >= size else cv2.INTER_LINEAR)
    target = cv2.resize(mask[y:y + h, x:x + w], (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        crop, target = crop[:, ::-1], target[:, ::-1]
    if rng.random() < 0.5:
        crop, target = crop[::-1], target[::-1]
    turns = int(rng.integers(0, 4))
    if turns:
        crop, target = np.rot90(crop, turns), np.rot90(target, turns)
    pixels = crop.astype(np.float32)
    contrast = rng.uniform(0.85, 1.15)
    brightness = rng.uniform(-20.0, 20.0)
    gain = rng.uniform(0.93, 1.07, size=3).astype(np.float32)
    mean = pixels.mean()
    pixels = (pixels - mean) * contrast + mean + brightness
    pixels = pixels * gain
    return np.clip(pixels, 0, 255).astype(np.uint8), np.ascontiguousarray(np.clip(target, 0.0, 1.0), np.float32)


def at_size(data: SegmentationSet, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Un-augmented (images (N, size, size, 3) uint8, masks (N, size, size) bool) for validation."""
    images = np.stack([resize_frame(im, size) for im in data.images]) if len(data) else np.zeros((0, size, size, 3), np.uint8)
    masks = np.stack([resize_mask_fraction(m, size) >= 0.5 for m in data.masks]) if len(data) else np.zeros((0, size, size), bool)
    return images, masks
