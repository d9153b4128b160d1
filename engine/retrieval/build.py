"""Filling a retrieval database: which (frame, mask) pairs go in, how a polyp frame becomes polyp-free, and the
streaming build/add loop with per-stage timing.

Sources:
- ``--polyps DIR``: a Kvasir-like folder (``images/`` + ``masks/``, or frames + ``--masks DIR``). With
  ``--remove-polyps`` each polyp frame is first made polyp-free by the inpainting engine (prompt
  ``bundle.prompts["remove"]``, "Normal", in the mask's polyps' bounding boxes padded by 15 px, as Polyp-Gen
  builds its database) and stored with its original mask ("removed-by-<inpainting bundle id>"). Without it,
  the polyp frame itself is the entry ("polyp-frame"): a SHORTCUT — the paper's entries are polyp-free, and a
  frame that still shows its polyp makes queries match polyp texture rather than the surroundings where
  polyps occur.
- ``--normals DIR``: curator-supplied polyp-free frames, each with a mask (paired by name, ``masks/`` inside
  or ``--normals-masks DIR``) of where a polyp was or could be ("supplied").

A bad frame or mask (unreadable, size mismatch, empty mask, no mask) is reported and skipped; it never stops
the build. Frames are processed one at a time (memory flat in their number).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from engine.errors import InputError, PolypForgeError
from engine.fileio import staged_folder
from engine.retrieval.database import DatabaseError, DatabaseWriter, create_empty

Log = Callable[[str], None]
REMOVE_BOX_PAD = 15  # px around each polyp's box, as Polyp-Gen's sampler pads boxes
STAGES = ("read", "remove", "features", "write", "commit")


@dataclass(frozen=True)
class EntrySource:
    frame_path: Path
    mask_path: Path | None
    kind: str  # "polyp" (a frame showing the polyp of its mask) or "normal" (polyp-free, curator-supplied)


@dataclass
class BuildReport:
    database: Path
    added: int = 0
    count: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (frame path, reason)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    seconds: float = 0.0
    truncated: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def frames_per_second(self) -> dict[str, float]:
        """Per stage, frames per second over the frames that were added (commit: over all of them at once)."""
        n = max(self.added, 1)
        return {stage: (n / s if s > 0 else float("inf")) for stage, s in self.stage_seconds.items()}


def discover_sources(folder: str | os.PathLike[str], masks: str | os.PathLike[str] | None, kind: str) -> tuple[list[EntrySource], list[str]]:
    """Frames of a folder with their paired masks (engine.dataset.discovery handles the layouts)."""
    from engine.dataset.discovery import discover

    found = discover(folder, masks_dir=masks)
    sources = [EntrySource(frame.path, frame.mask_path, kind) for frame in found.frames]
    if not sources:
        raise InputError(f"{folder}: no frames found (jpg/jpeg/png/bmp/tif)")
    if found.masks_dir is None:
        raise InputError(
            f"{folder}: no masks: a database entry needs the mask of where a polyp was (a masks/ folder beside "
            "images/, or --masks DIR / --normals-masks DIR)"
        )
    return sources, found.notes


class PolypRemover:
    """Turns a polyp frame into a polyp-free one with the inpainting engine (prompt "Normal")."""

    def __init__(self, bundle: str | os.PathLike[str], provider: str = "auto", steps: int | None = None,
                 threads: int | None = None, pad: int = REMOVE_BOX_PAD):
        from engine.pipelines import open_pipeline

        self.pipeline = open_pipeline(bundle, provider=provider, threads=threads, purpose="inpaint")
        self.prompt = self.pipeline.prompts.get("remove")
        if self.prompt is None:
            from engine.errors import InputError

            raise InputError(f"{bundle}: a {self.pipeline.bundle.kind} bundle cannot remove polyps; use an sd-inpaint "
                             "or pixel-inpaint bundle")
        self.steps = steps
        self.pad = pad
        self.bundle_id = self.pipeline.bundle.bundle_id
        self.how = f"removed-by-{self.bundle_id}"

    def region(self, mask: np.ndarray) -> np.ndarray:
        from engine.masks.instances import bbox_of, padded_box_mask, split_instances

        height, width = mask.shape
        region = np.zeros((height, width), bool)
        components = split_instances(mask) or [mask]
        for component in components:
            region |= padded_box_mask(bbox_of(component), self.pad, height, width)
        return region

    def __call__(self, frame: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        result = self.pipeline(frame, self.region(mask), prompt=self.prompt, steps=self.steps, seed=seed)
        return result.image


def _read_pair(source: EntrySource) -> tuple[np.ndarray, np.ndarray, str]:
    from engine.dataset.image_reader import read_frame, read_mask

    if source.mask_path is None:
        raise InputError(f"{source.frame_path}: no mask paired with this frame")
    data = source.frame_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    frame = read_frame(source.frame_path)
    mask = read_mask(source.mask_path)
    if mask.shape != frame.shape[:2]:
        raise InputError(f"{source.mask_path}: the mask is {mask.shape[1]}×{mask.shape[0]} but the frame is "
                         f"{frame.shape[1]}×{frame.shape[0]}")
    if not mask.any():
        raise InputError(f"{source.mask_path}: the mask is empty")
    return frame, mask, sha


def add_entries(writer: DatabaseWriter, sources: Iterable[EntrySource], extractor,
                remover: PolypRemover | None = None, report: BuildReport | None = None, log: Log = print,
                skip_known: bool = True) -> BuildReport:
    """Stream sources into `writer` (uncommitted until writer.commit()); bad frames are reported and skipped."""
    report = report or BuildReport(database=writer.root)
    known = writer.known_shas() if skip_known else set()
    seconds = report.stage_seconds
    sources = list(sources)
    last_log = time.perf_counter()
    for done, source in enumerate(sources):
        if time.perf_counter() - last_log > 10:
            log(f"… {done}/{len(sources)} frames ({report.added} added, {len(report.skipped)} skipped)")
            last_log = time.perf_counter()
        started = time.perf_counter()
        try:
            frame, mask, sha = _read_pair(source)
        except (InputError, OSError) as exc:
            report.skipped.append((str(source.frame_path), _one_line(exc)))
            log(f"skipped {source.frame_path}: {_one_line(exc)}")
            continue
        finally:
            seconds["read"] += time.perf_counter() - started
        if sha in known:
            report.skipped.append((str(source.frame_path), "already in the database (same frame sha256)"))
            log(f"skipped {source.frame_path}: already in the database")
            continue
        try:
            how = "supplied" if source.kind == "normal" else "polyp-frame"
            if source.kind == "polyp" and remover is not None:
                started = time.perf_counter()
                frame = remover(frame, mask, seed=int(sha[:8], 16))
                seconds["remove"] += time.perf_counter() - started
                how = remover.how
            started = time.perf_counter()
            features = extractor.extract(frame)
            seconds["features"] += time.perf_counter() - started
            started = time.perf_counter()
            writer.add(features.local, features.global_, mask, frame, str(source.frame_path.resolve()), sha, how)
            seconds["write"] += time.perf_counter() - started
        except DatabaseError:
            raise
        except PolypForgeError as exc:
            report.skipped.append((str(source.frame_path), _one_line(exc)))
            log(f"skipped {source.frame_path}: {_one_line(exc)}")
            continue
        known.add(sha)
        report.added += 1
    return report


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def build_database(target: str | os.PathLike[str], sources: Iterable[EntrySource], extractor,
                   remover: PolypRemover | None = None, overwrite: bool = False, log: Log = print) -> BuildReport:
    """A new database at `target`, built in a temporary folder beside it and renamed into place at the end:
    an interrupted build leaves nothing under the target name."""
    started = time.perf_counter()
    target = Path(target).expanduser().resolve()
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists (use `db add` to add to it, or --overwrite to replace it)")
    report = BuildReport(database=target)
    with staged_folder(target) as staging:
        create_empty(staging.result, extractor.identity())
        with DatabaseWriter(staging.result, extractor.identity()) as writer:
            add_entries(writer, sources, extractor, remover, report, log)
            commit_started = time.perf_counter()
            report.count = writer.commit()
            report.stage_seconds["commit"] += time.perf_counter() - commit_started
        (staging.result / ".lock").unlink(missing_ok=True)
    report.seconds = time.perf_counter() - started
    return report


def add_to_database(database: str | os.PathLike[str], sources: Iterable[EntrySource], extractor,
                    remover: PolypRemover | None = None, log: Log = print) -> BuildReport:
    """Append to an existing database; nothing of it counts until the final commit (see engine.retrieval.database)."""
    started = time.perf_counter()
    root = Path(database).expanduser().resolve()
    report = BuildReport(database=root)
    with DatabaseWriter(root, extractor.identity()) as writer:
        report.truncated = dict(writer.truncated)
        if writer.truncated:
            report.notes.append("removed what an interrupted add had left beyond the committed entries: "
                                + ", ".join(f"{k} {v}" for k, v in writer.truncated.items()))
        add_entries(writer, sources, extractor, remover, report, log)
        commit_started = time.perf_counter()
        report.count = writer.commit()
        report.stage_seconds["commit"] += time.perf_counter() - commit_started
    report.seconds = time.perf_counter() - started
    return report
