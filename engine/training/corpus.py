"""Training data in memory: frames with their polyp boxes and masks, from any layout the batch job reads.

Frames are read once (engine.dataset readers: EXIF, odd colour modes, masks binarised > 127 and split into one
polyp per connected component), scaled so their longer side is at most ``max_side`` and kept as uint8. A
deterministic share of frames is held out — chosen by a hash of the frame's file stem, so the same frame is held
out whichever folder or order it comes in — and never trained on: the sample grids and the model card's figures
are made on them. A frame that cannot be read is reported and left out; it never stops the run.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.bundle.hashing import sha256_of_file
from engine.dataset.discovery import SourceFrame, discover
from engine.dataset.image_reader import read_frame, read_mask
from engine.dataset.labels import read_yolo
from engine.dataset.splits import is_held_out
from engine.errors import InputError, PolypForgeError
from engine.masks.geometry import binarize
from engine.masks.instances import split_instances


@dataclass
class CorpusFrame:
    rel: str  # "<folder name>/<path inside it>"
    stem: str
    image: np.ndarray  # uint8 (h, w, 3), scaled
    boxes: list[tuple[float, float, float, float]]  # polyp boxes (x0, y0, x1, y1) in scaled pixels
    instance_masks: list[np.ndarray | None]  # per box: its pixel mask (None when only the box is known)
    normal: bool  # from a folder of normal frames (or a polyp folder's frame with no polyp)
    sha256: str = ""  # of the frame file's bytes: the bundle's training_frames.txt (engine.bundle.training_frames)

    @property
    def has_polyp(self) -> bool:
        return bool(self.boxes)


@dataclass
class Corpus:
    train: list[CorpusFrame]
    held_out: list[CorpusFrame]
    problems: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {
            "sources": self.sources,
            "train_frames": len(self.train),
            "train_polyp_frames": sum(f.has_polyp for f in self.train),
            "train_polyps": sum(len(f.boxes) for f in self.train),
            "held_out_frames": len(self.held_out),
            "held_out": sorted(f.stem for f in self.held_out),
            "unreadable": len(self.problems),
        }


def _scaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return image, scale


def _load_frame(frame: SourceFrame, folder_name: str, normal: bool, max_side: int) -> CorpusFrame:
    pixels = read_frame(frame.path)
    height, width = pixels.shape[:2]
    masks: list[np.ndarray | None] = []
    boxes: list[tuple[float, float, float, float]] = []
    if not normal:
        if frame.mask_path is not None:
            mask = binarize(read_mask(frame.mask_path))
            if mask.shape != (height, width):
                raise InputError(f"{frame.mask_path}: mask is {mask.shape[1]}×{mask.shape[0]} but the frame is {width}×{height}")
            for component in split_instances(mask):
                ys, xs = np.nonzero(component)
                boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
                masks.append(component)
        else:
            instances = frame.label_instances if frame.label_instances is not None else (
                read_yolo(frame.yolo_path, width, height) if frame.yolo_path is not None else [])
            for instance in instances:
                x, y, w, h = instance.bbox
                boxes.append((x, y, x + w, y + h))
                masks.append(instance.raster(height, width) if instance.shape == "polygon" else None)
    image, scale = _scaled(pixels, max_side)
    sh, sw = image.shape[:2]
    scaled_masks = []
    for mask in masks:
        if mask is None:
            scaled_masks.append(None)
        else:
            scaled_masks.append(np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((sw, sh), Image.Resampling.NEAREST)) > 127)
    scaled_boxes = [tuple(v * scale for v in box) for box in boxes]
    return CorpusFrame(rel=f"{folder_name}/{frame.rel}", stem=Path(frame.rel).stem, image=image, boxes=scaled_boxes,
                       instance_masks=scaled_masks, normal=normal or not boxes, sha256=sha256_of_file(frame.path))


def load_corpus(polyp_dirs: list[Path], normal_dirs: list[Path] | None = None, max_side: int = 640,
                held_out_fraction: float = 0.05, workers: int = 2, limit: int | None = None) -> Corpus:
    """Read every frame of the polyp folders (with masks or labels) and of the normal folders into memory."""
    jobs: list[tuple[SourceFrame, str, bool]] = []
    sources = []
    for folder, normal in [(Path(p), False) for p in polyp_dirs] + [(Path(p), True) for p in (normal_dirs or [])]:
        found = discover(folder)
        # the folder's name, not its path: a run resumed on another machine (or from another cwd) is the same run
        sources.append(f"{folder.resolve().name} ({len(found.frames)} {'normal ' if normal else ''}frames)")
        chosen = found.frames if limit is None else found.frames[:limit]
        jobs.extend((frame, folder.name, normal) for frame in chosen)
    if not jobs:
        raise InputError("no training frames found in " + ", ".join(str(p) for p in polyp_dirs))
    problems: list[str] = []

    def load(job):
        frame, name, normal = job
        try:
            return _load_frame(frame, name, normal, max_side)
        except PolypForgeError as exc:
            problems.append(str(exc))
            return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        frames = [f for f in pool.map(load, jobs) if f is not None]
    train = [f for f in frames if not is_held_out(f.stem, held_out_fraction)]
    held_out = [f for f in frames if is_held_out(f.stem, held_out_fraction)]
    if not any(f.has_polyp for f in train):
        raise InputError("none of the training frames has a polyp mask or label: the Polyp prompt has nothing to learn from")
    return Corpus(train=train, held_out=held_out, problems=problems, sources=sources)
