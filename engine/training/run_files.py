"""The JSON files of a run folder, read and written by the trainer and by whoever looks at a run afterwards (the
model card, ``main.py evaluate``'s learning curves), so each is parsed in one place:

- ``log.jsonl``: one JSON object per logged step (``loss``, ``lr``, …) or validation (``val_*``);
- ``run.json`` (and any settings record like it, e.g. ``evaluation.json``): the settings a folder was made with,
  which a resume compares against its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.fileio import atomic_write_bytes

RUN_RECORD = "run.json"
LOG = "log.jsonl"


def read_log(path: Path, up_to_step: int | None = None) -> list[dict]:
    """The log's rows (of steps up to ``up_to_step`` when given); a torn last line is skipped."""
    rows = []
    if not Path(path).is_file():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(row, dict) and (up_to_step is None or row.get("step", 0) <= up_to_step):
            rows.append(row)
    return rows


def write_log(path: Path, rows: list[dict]) -> None:
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode("utf-8")
    atomic_write_bytes(path, data)


def read_record(path: Path) -> dict | None:
    """A settings record; None when there is none or it cannot be parsed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_record(path: Path, record: dict) -> None:
    atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def changed_settings(previous: dict, record: dict, sections: tuple[str, ...] | None = None) -> list[str]:
    """The settings that differ between two records as JSON stores them, sorted: the keys of each of ``sections``
    (named ``section.key``) when given, else the top-level keys."""
    record = json.loads(json.dumps(record))
    if sections is None:
        return sorted(k for k in set(previous) | set(record) if previous.get(k) != record.get(k))
    return sorted(
        f"{section}.{key}"
        for section in sections
        for key in set(previous.get(section, {})) | set(record.get(section, {}))
        if previous.get(section, {}).get(key) != record.get(section, {}).get(key)
    )
