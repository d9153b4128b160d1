"""manifest.jsonl: one JSON line per variant, appended (flushed and fsynced) as each variant finishes.

A run killed mid-line leaves a partial last line: ``load`` skips lines that do not parse, so a resumed run
redoes that variant. At the end of a job the manifest is rewritten atomically in plan order, so its content
does not depend on where earlier runs were interrupted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.fileio import atomic_write_bytes

MANIFEST_NAME = "manifest.jsonl"


class Manifest:
    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / MANIFEST_NAME

    def load(self) -> tuple[list[dict], int]:
        """(records, number of damaged lines skipped)."""
        if not self.path.exists():
            return [], 0
        records, damaged = [], 0
        with open(self.path, "rb") as handle:
            for raw in handle:
                try:
                    record = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    damaged += 1
                    continue
                if isinstance(record, dict) and "key" in record:
                    records.append(record)
                else:
                    damaged += 1
        return records, damaged

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
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
        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        atomic_write_bytes(self.path, text.encode("utf-8"))
