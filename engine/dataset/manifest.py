"""manifest.jsonl: one JSON line per variant, appended (flushed and fsynced) as each variant finishes.

A run killed mid-line leaves a partial last line: reading skips lines that do not parse, so a resumed run
redoes that variant. At the end of a job the manifest is rewritten atomically in plan order, so its content
does not depend on where earlier runs were interrupted.

Reading scales with the manifest's length, not with what it holds: a resume needs only each key's latest
status and image (``index``), and the end-of-job rewrite seeks each key's latest line in plan order and
streams it out (``rewrite_in_order``), so no step holds all records in memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from engine.fileio import atomic_writer

MANIFEST_NAME = "manifest.jsonl"
FINISHED = ("ok", "skipped", "rejected")  # a resumed job does not redo these


def _parse(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "key" in record else None


def encode_record(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


@dataclass(slots=True)
class ManifestEntry:
    offset: int  # where the key's latest line starts
    status: str | None
    image: str | None


@dataclass
class ManifestIndex:
    """Each key's latest line (later lines win: a retried failure, a redone variant)."""

    entries: dict[str, ManifestEntry] = field(default_factory=dict)
    damaged: int = 0

    def done_keys(self, output_dir: Path) -> set[str]:
        """Keys a resumed run skips: finished, and for ok variants with their image still on disk."""
        output_dir = Path(output_dir)
        return {key for key, entry in self.entries.items() if entry.status in FINISHED
                and (entry.status != "ok" or (entry.image is not None and (output_dir / entry.image).is_file()))}


@dataclass
class ManifestTally:
    """What a rewritten manifest holds, counted as it was streamed."""

    counts: dict[str, int] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)  # {"frame", "reason"} of each failed line

    def add(self, record: dict) -> None:
        status = record.get("status")
        self.counts[status] = self.counts.get(status, 0) + 1
        if status == "failed":
            self.failures.append({"frame": record.get("source_frame"), "reason": record.get("reason")})


class Manifest:
    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / MANIFEST_NAME

    def numbered_records(self) -> Iterator[tuple[int, dict]]:
        """(line number from 1, record) of each readable line, streamed; damaged lines are left out."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                record = _parse(raw)
                if record is not None:
                    yield number, record

    def records(self) -> Iterator[dict]:
        for _, record in self.numbered_records():
            yield record

    def load(self) -> tuple[list[dict], int]:
        """(records, number of damaged lines skipped)."""
        if not self.path.exists():
            return [], 0
        records, damaged = [], 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                record = _parse(raw)
                if record is None:
                    damaged += 1
                else:
                    records.append(record)
        return records, damaged

    def index(self) -> ManifestIndex:
        index = ManifestIndex()
        if not self.path.exists():
            return index
        offset = 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                record = _parse(raw)
                if record is None:
                    index.damaged += 1
                else:
                    image = record.get("image")
                    index.entries[record["key"]] = ManifestEntry(offset, record.get("status"),
                                                                 image if isinstance(image, str) else None)
                offset += len(raw)
        return index

    def rewrite_in_order(self, keys: Iterable[str]) -> ManifestTally:
        """Rewrite the manifest atomically as each key's latest line, in the order of `keys` (keys without a
        line are left out, and so are lines whose key is not listed); streamed, one line in memory."""
        index = self.index()
        tally = ManifestTally()
        with atomic_writer(self.path) as target:
            if index.entries:
                with open(self.path, "rb") as source:
                    for key in keys:
                        entry = index.entries.get(key)
                        if entry is None:
                            continue
                        source.seek(entry.offset)
                        record = _parse(source.readline())
                        target.write(encode_record(record))
                        tally.add(record)
        return tally

    def append(self, record: dict) -> None:
        line = encode_record(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            # A line written after a torn one must start on its own line.
            if handle.tell() > 0:
                with open(self.path, "rb") as check:
                    check.seek(-1, os.SEEK_END)
                    if check.read(1) != b"\n":
                        handle.write(b"\n")
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, records: list[dict]) -> None:
        with atomic_writer(self.path) as target:
            for record in records:
                target.write(encode_record(record))


def manifest_groups(records: Sequence[dict | None]) -> dict[str, dict[str, list[int]]]:
    """{"mask_source": {"random": [indices]}, "mode": {...}, "bundle": {...}}: which of a PolypForge output's
    variants (their manifest records, in order; None for an image without one) share each setting."""
    groups: dict[str, dict[str, list[int]]] = {"mask_source": {}, "mode": {}, "bundle": {}}
    for index, record in enumerate(records):
        record = record or {}
        for key, by_value in groups.items():
            value = record.get(key)
            if key == "bundle" and record.get("bundle_id"):
                value = f"{value} ({str(record['bundle_id'])[:12]})"
            by_value.setdefault(str(value), []).append(index)
    return groups
