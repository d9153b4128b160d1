"""Writing captions files, atomically (engine.fileio): the one writer for ``main.py caption`` and the app's
caption editor. What it writes, engine.dataset.captions reads back unchanged.

- ``write_captions(path, rows)``: rows are dicts with "frame" and "text" first and any other columns
  (CAPTION_COLUMNS are what the captioner writes). CSV/TSV get a header; dict/list values become compact
  JSON with sorted keys (the ``attributes`` column); JSONL writes one object per row. Texts are written on
  one line (runs of white space, line breaks included, become one space): a prompt has no layout.
- ``set_caption(path, frame_rel, text)``: the curator's edit of one frame's text. The row the batch job
  would read for that frame is replaced (its other columns kept, ``source`` set to "curator"), or a row is
  added; the rest of the file is written back as it was read (format, header names, column order).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from engine.dataset.captions import (
    CSV_SUFFIXES,
    JSONL_SUFFIXES,
    CaptionTable,
    caption_key,
    frame_row_key,
    read_caption_table,
)
from engine.errors import InputError
from engine.fileio import atomic_write_bytes

CAPTION_COLUMNS = ("frame", "text", "attributes", "vlm_text", "source", "captioner")
CURATOR = "curator"


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list, bool, int, float)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def encode_captions(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> bytes:
    """The bytes of a captions file holding `rows` in the format `path`'s suffix names."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        lines = []
        for row in rows:
            lines.append(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
        return "".join(lines).encode("utf-8")
    if suffix not in CSV_SUFFIXES:
        raise InputError(f"{path}: a captions file must be .csv, .tsv or .jsonl")
    names = list(columns or [])
    for row in rows:
        names += [key for key in row if key not in names]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in names])
    return buffer.getvalue().encode("utf-8")


def write_captions(path: str | Path, rows: list[dict], columns: list[str] | None = None,
                   frame_field: str = "frame", text_field: str = "text") -> Path:
    """Write `rows` atomically: a run killed mid-write leaves the old file. Each row needs a frame and a
    text (under `frame_field` / `text_field`: a file read back keeps its header's names)."""
    rows = [{**row, text_field: one_line(row.get(text_field) or "")} for row in rows]
    for number, row in enumerate(rows, start=1):
        if not str(row.get(frame_field) or "").strip() or not row[text_field]:
            raise InputError(f"{path}: row {number} needs a frame and a text")
    return atomic_write_bytes(path, encode_captions(path, rows, columns))


def set_caption(path: str | Path, frame_rel: str, text: str, source: str = CURATOR) -> str:
    """Replace (or add) the caption the batch job reads for `frame_rel`; returns the key written.
    A missing file is created (CSV/TSV/JSONL by its suffix)."""
    path = Path(path)
    text = one_line(text)
    if not text:
        raise InputError(f"{path}: a caption cannot be empty (frame {frame_rel})")
    table = read_caption_table(path) if path.exists() else CaptionTable(path=path, rows=[])
    frame_field, text_field = table.frame_field, table.text_field
    rows = [{frame_field: row.frame, text_field: row.text, **row.extra} for row in table.rows]
    key = frame_row_key({row.key for row in table.rows}, frame_rel)
    if key is None:
        key = caption_key(frame_rel)
        rows.append({frame_field: key, text_field: text, "source": source})
    else:
        for row, original in zip(rows, table.rows):
            if original.key == key:
                row[text_field] = text
                row["source"] = source
    write_captions(path, rows, table.columns or None, frame_field, text_field)
    return key
