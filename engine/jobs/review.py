"""Accepting and rejecting variants after a job: the dataset on disk always matches what was accepted.

A rejected variant's image and instance mask move to ``rejected/`` (so a change of mind can bring them
back), its manifest line gets ``status: rejected`` (kept, with everything that made it), and COCO, YOLO and
the contact sheet are rebuilt without it. Accepting reverses that. A resumed job does not regenerate
rejected variants.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.dataset.job_folder import JOB_RECORD
from engine.dataset.manifest import Manifest
from engine.dataset.rebuild import rebuild_outputs
from engine.errors import InputError
from engine.jobs.frame_work import REJECTED_DIR
from engine.jobs.output_lock import take_output_lock


def load_records(output: Path) -> list[dict]:
    records, _ = Manifest(output).load()
    return records


def job_formats_and_sources(output: Path) -> tuple[list[str], dict[str, Path]]:
    """The job's output formats and {source frame (relative) → path}; {} when the input folder has moved."""
    try:
        record = json.loads((output / JOB_RECORD).read_text(encoding="utf-8"))
        settings = record["settings"]
    except (OSError, ValueError, KeyError):
        raise InputError(f"{output / JOB_RECORD}: missing or unreadable: not a PolypForge job folder") from None
    formats = record.get("formats") or ["coco", "yolo", "yolo-seg"]
    from engine.dataset.discovery import discover

    try:
        sources = discover(settings["input"], settings.get("masks"), settings.get("labels"), settings.get("split_file"),
                           exclude=[output], include_synthetic=bool(settings.get("include_synthetic")))
        source_paths = {f.rel: f.path for f in sources.frames}
    except InputError:
        source_paths = {}  # the input folder moved: the contact sheet just shows fewer pairs
    return formats, source_paths


def _move(output: Path, relative: str, to_rejected: bool) -> None:
    source = output / relative if to_rejected else output / REJECTED_DIR / relative
    target = output / REJECTED_DIR / relative if to_rejected else output / relative
    if source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


def set_review(output: str | Path, keys: list[str], accepted: bool) -> list[dict]:
    """Mark variants (by manifest key) accepted or rejected; returns the updated records. Holds the output
    folder's lock meanwhile: refused (OutputLocked, naming the holder) while a job writes there."""
    output = Path(output)
    if not (output / JOB_RECORD).is_file():
        raise InputError(f"{output / JOB_RECORD}: missing or unreadable: not a PolypForge job folder")
    with take_output_lock(output, "review", what="cannot accept or reject now"):
        return _set_review_locked(output, keys, accepted)


def _set_review_locked(output: Path, keys: list[str], accepted: bool) -> list[dict]:
    manifest = Manifest(output)
    records, _ = manifest.load()
    by_key = {r["key"]: r for r in records}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise InputError(f"{manifest.path}: no variant with key {missing[0]!r}")
    for key in keys:
        record = by_key[key]
        if record["status"] not in ("ok", "rejected"):
            raise InputError(f"{record['image']}: a {record['status']} variant cannot be reviewed")
        wanted = "ok" if accepted else "rejected"
        if record["status"] == wanted:
            continue
        for relative in (record["image"], record.get("mask")):
            if relative:
                _move(output, relative, to_rejected=not accepted)
        record["status"] = wanted
    manifest.rewrite(records)
    formats, source_paths = job_formats_and_sources(output)
    rebuild_outputs(output, records, formats, source_paths)
    return records
