"""Reading captions files: per-frame (and per-polyp) texts, as the batch job's ``--captions`` and the app use them.

Formats (by suffix):
- CSV (``.csv``, ``.txt``) or TSV (``.tsv``): a header row naming a frame column (one of FRAME_KEYS) and a
  text column (one of TEXT_KEYS), other columns kept as they are (``main.py caption`` writes
  frame,text,attributes,vlm_text,source,captioner); or, without such a header, two columns frame,text.
  Quoted cells may hold commas, quotes and line breaks.
- JSONL (``.jsonl``, ``.ndjson``, ``.json``): one object per line with a frame key and a text key.

Keys are frame stems or relative paths, '/'-separated, an image suffix dropped (``caption_key``). A key
``<frame>#<n>`` is the caption of the frame's n-th polyp (1 = largest, as engine.masks.instances splits a
mask); the batch job reads the frame's own key (it generates all of a frame's polyps under one prompt), so
per-polyp rows are for curators and training, and never picked by mistake: ``caption_for`` looks up a
frame's relative path, then its stem, never a ``#`` key.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
FRAME_KEYS = ("frame", "stem", "image", "file", "name")
TEXT_KEYS = ("text", "caption", "prompt", "description")
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
POLYP_SEPARATOR = "#"


@dataclass
class CaptionRow:
    frame: str  # as written in the file
    text: str
    extra: dict = field(default_factory=dict)  # the row's other columns (CSV: strings; JSONL: JSON values)
    line: int = 0

    @property
    def key(self) -> str:
        return caption_key(self.frame)


@dataclass
class CaptionTable:
    path: Path
    rows: list[CaptionRow]
    frame_field: str = "frame"  # the header's names, kept when the file is written back
    text_field: str = "text"
    columns: list[str] = field(default_factory=list)  # every column, in the file's order (CSV with a header)


def caption_key(name: str) -> str:
    """A captions-file key or a frame's relative path, as looked up: '/'-separated, image suffix dropped."""
    path = Path(name.strip().replace("\\", "/"))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        path = path.with_suffix("")
    return path.as_posix()


def polyp_key(frame_key: str, polyp: int) -> str:
    """The key of a frame's n-th polyp (1 = largest)."""
    return f"{frame_key}{POLYP_SEPARATOR}{polyp}"


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: captions file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a captions file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: captions file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the captions file ({exc.strerror or exc})") from None


def _jsonl_rows(path: Path, raw: str) -> tuple[list[CaptionRow], str, str]:
    rows, frame_field, text_field = [], "frame", "text"
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise InputError(f"{path}:{number}: each line must be a JSON object with a frame and a text")
        frame_name = next((k for k in FRAME_KEYS if k in item), None)
        text_name = next((k for k in TEXT_KEYS if k in item), None)
        if not rows and frame_name and text_name:
            frame_field, text_field = frame_name, text_name
        extra = {k: v for k, v in item.items() if k not in (frame_name, text_name)}
        rows.append(CaptionRow(item.get(frame_name), item.get(text_name), extra, number))
    return rows, frame_field, text_field


def _csv_rows(path: Path, raw: str) -> tuple[list[CaptionRow], str, str, list[str]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter)
    try:
        records = [(reader.line_num, cells) for cells in reader]
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    frame_col, text_col, columns, start = 0, 1, [], 0
    if records:
        header = [cell.strip().lower() for cell in records[0][1]]
        if any(cell in FRAME_KEYS for cell in header) and any(cell in TEXT_KEYS for cell in header):
            frame_col = next(i for i, cell in enumerate(header) if cell in FRAME_KEYS)
            text_col = next(i for i, cell in enumerate(header) if cell in TEXT_KEYS)
            columns = [cell.strip() for cell in records[0][1]]
            start = 1
    rows = []
    for number, cells in records[start:]:
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) <= max(frame_col, text_col):
            raise InputError(f"{path}:{number}: expected a frame and a text, got {len(cells)} column(s)")
        names = columns or ["frame", "text"]
        extra = {(names[i] if i < len(names) else f"column{i + 1}"): cell
                 for i, cell in enumerate(cells) if i not in (frame_col, text_col)}
        rows.append(CaptionRow(cells[frame_col], cells[text_col], extra, number))
    frame_field = columns[frame_col] if columns else "frame"
    text_field = columns[text_col] if columns else "text"
    return rows, frame_field, text_field, columns


def read_caption_table(path: str | Path) -> CaptionTable:
    """Every row of a captions file with its other columns (for editing and rewriting it). InputError
    naming the file and line for anything unreadable, empty or contradictory."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + JSONL_SUFFIXES:
        raise InputError(f"{path}: a captions file must be .csv, .tsv or .jsonl (frame stem → text)")
    raw = _read_text(path)
    columns: list[str] = []
    if suffix in JSONL_SUFFIXES:
        rows, frame_field, text_field = _jsonl_rows(path, raw)
    else:
        rows, frame_field, text_field, columns = _csv_rows(path, raw)
    texts: dict[str, str] = {}
    for row in rows:
        if not isinstance(row.frame, str) or not row.frame.strip():
            raise InputError(f"{path}:{row.line}: no frame name (expected one of {', '.join(FRAME_KEYS)})")
        if not isinstance(row.text, str) or not row.text.strip():
            raise InputError(f"{path}:{row.line}: no text for frame {row.frame!r}")
        row.text = row.text.strip()
        if row.key in texts and texts[row.key] != row.text:
            raise InputError(f"{path}:{row.line}: frame {row.frame!r} has two different captions")
        texts[row.key] = row.text
    return CaptionTable(path=path, rows=rows, frame_field=frame_field, text_field=text_field, columns=columns)


def read_captions(path: str | Path) -> dict[str, str]:
    """{key: text} from a captions file (see the module docstring); InputError when it holds none."""
    table = read_caption_table(path)
    captions = {row.key: row.text for row in table.rows}
    if not captions:
        raise InputError(f"{table.path}: holds no captions")
    return captions


def frame_row_key(keys, frame_rel: str) -> str | None:
    """The key under which a frame's caption is found among `keys`: its relative path (suffix dropped),
    else its stem; None when neither is there."""
    key = caption_key(frame_rel)
    if key in keys:
        return key
    stem = Path(key).name
    return stem if stem in keys else None


def caption_for(captions: dict[str, str], frame_rel: str) -> str | None:
    """The caption of a frame: by its relative path (suffix dropped), else by its stem."""
    key = frame_row_key(captions, frame_rel)
    return captions[key] if key is not None else None
