"""What marks a folder as a PolypForge job's output: the job record, the manifest, the output lock.

Discovery never takes frames from such a folder unless asked (its images are synthetic), and a job refuses an
output folder that would hold its own input.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.dataset.manifest import MANIFEST_NAME

JOB_RECORD = "job.json"  # the settings and formats of the job that wrote the folder
LOCK_NAME = "job.lock"  # who is writing the folder now (engine.jobs.output_lock)
OUTPUT_MARKERS = (JOB_RECORD, MANIFEST_NAME, LOCK_NAME)


def _is_job_record(path: Path) -> bool:
    """A job.json PolypForge wrote (a dict with its settings), not some other program's job.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("settings"), dict)


def marks_job_output(folder: Path, names: set[str] | frozenset[str]) -> bool:
    """True when `folder`, whose entries are `names`, is a PolypForge job's output folder."""
    if MANIFEST_NAME in names or LOCK_NAME in names:
        return True
    return JOB_RECORD in names and _is_job_record(folder / JOB_RECORD)


def is_job_output(folder: Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and marks_job_output(folder, {n for n in OUTPUT_MARKERS if (folder / n).exists()})
