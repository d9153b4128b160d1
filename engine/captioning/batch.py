"""``main.py caption``: a folder of frames with masks → a captions file the batch job's ``--captions`` reads.

Rows (engine.dataset.caption_writer.CAPTION_COLUMNS), in the order the frames are found:
- ``frame``: the frame's relative path without its suffix (what the batch job looks up); for a frame with
  several polyps, one more row per polyp keyed ``<frame>#<n>`` (n = 1 the largest, as engine.masks.instances
  splits the mask). The frame's own row describes its largest polyp ("2 polyps. The largest is …"): the
  job generates all of a frame's polyps under one prompt.
- ``text``: the measured sentence (engine.captioning.template); ``attributes``: the words and the numbers
  behind them as JSON (for filtering and balancing); ``vlm_text``: what ``--model`` said, beside the
  measured text, never instead of it; ``source``: "measured", or "curator" once edited in the app;
  ``captioner``: PolypForge's version, the measure version and the vision-language model used.

Frames without a mask (or with an empty one) get no row: there is no polyp to measure. One unreadable
frame or mask is a failure with its file and reason; the others go on.

Resuming: each frame's rows are appended to ``<out>.partial.jsonl`` (flushed and fsynced) as it is done.
A run killed at any moment, rerun with the same command, reuses the rows of frames whose file (size,
modification time) and settings are unchanged; the final file is written atomically and the partial file
removed. Rerunning over an existing captions file keeps the texts a curator edited (source "curator"), with
fresh attributes.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine import __version__
from engine.captioning.captioner import MEASURE_VERSION, NoPolyp, caption_frame
from engine.dataset.caption_writer import CAPTION_COLUMNS, CURATOR, write_captions
from engine.dataset.captions import CSV_SUFFIXES, JSONL_SUFFIXES, caption_key, polyp_key, read_caption_table
from engine.dataset.discovery import discover
from engine.dataset.image_reader import read_frame, read_mask
from engine.errors import InputError, PolypForgeError

DISTRIBUTION_KEYS = ("colour", "surface", "size", "outline", "elevation", "position", "partly_out_of_view",
                     "background", "lighting")


class CaptionCannotStart(PolypForgeError):
    """Missing input, an output that is not a captions file, a vision-language model that cannot load."""


@dataclass
class CaptionSummary:
    output: Path
    frames: int = 0
    captioned: int = 0
    polyps: int = 0
    reused: int = 0  # frames whose rows an interrupted run had written
    without_mask: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    curator_kept: int = 0
    distribution: dict[str, dict[str, int]] = field(default_factory=dict)  # over frame rows
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "failures" if self.failures else "ok"

    def to_json(self) -> dict:
        return {**self.__dict__, "output": str(self.output), "status": self.status}


def distribution(frame_attributes: list[dict]) -> dict[str, dict[str, int]]:
    """Counts of each attribute's values over frames (lists count each finding; an empty one as "none")."""
    result: dict[str, Counter] = {key: Counter() for key in DISTRIBUTION_KEYS}
    for attributes in frame_attributes:
        for key in DISTRIBUTION_KEYS:
            value = attributes.get(key)
            if isinstance(value, list):
                result[key].update(value or ["none"])
            else:
                result[key][str(value).lower() if value is not None else "not told"] += 1
    return {key: dict(sorted(counter.items(), key=lambda item: (-item[1], item[0]))) for key, counter in result.items()}


def _frame_identity(path: Path) -> list:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


class _Progress:
    """Rows of finished frames, appended to ``<out>.partial.jsonl`` with the settings on the first line."""

    def __init__(self, output: Path, settings: dict):
        self.path = output.with_name(output.name + ".partial.jsonl")
        self.settings = settings
        self.done: dict[str, dict] = {}

    def load(self) -> int:
        if not self.path.exists():
            return 0
        try:
            lines = self.path.read_bytes().split(b"\n")
            header = json.loads(lines[0])
        except (OSError, ValueError, IndexError):
            header = None
        if not isinstance(header, dict) or header.get("settings") != self.settings:
            self.path.unlink(missing_ok=True)  # another run's work: start over
            return 0
        for raw in lines[1:]:
            try:
                record = json.loads(raw)
            except ValueError:  # the torn last line of a killed run
                continue
            if isinstance(record, dict) and "rel" in record:
                self.done[record["rel"]] = record
        return len(self.done)

    def append(self, record: dict) -> None:
        fresh = not self.path.exists()
        with open(self.path, "ab") as handle:
            if fresh:
                handle.write((json.dumps({"settings": self.settings}, sort_keys=True) + "\n").encode("utf-8"))
            elif handle.tell() > 0:
                with open(self.path, "rb") as check:
                    check.seek(-1, os.SEEK_END)
                    if check.read(1) != b"\n":
                        handle.write(b"\n")
            handle.write((json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        self.done[record["rel"]] = record

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _curator_texts(output: Path) -> dict[str, str]:
    """Texts a curator edited in an existing captions file at `output` (kept when it is rewritten)."""
    if not output.exists():
        return {}
    try:
        table = read_caption_table(output)
    except InputError as exc:
        raise CaptionCannotStart(f"{exc}; it would be overwritten: choose another --out or fix it") from None
    return {row.key: row.text for row in table.rows if str(row.extra.get("source", "")).strip() == CURATOR}


def _rows_for(frame_key: str, captions, captioner: str, vlm_texts: list[str] | None) -> list[dict]:
    def row(key, text, attributes, vlm_text):
        return {"frame": key, "text": text, "attributes": attributes, "vlm_text": vlm_text or "",
                "source": "measured", "captioner": captioner}

    first_vlm = vlm_texts[0] if vlm_texts else ""
    rows = [row(frame_key, captions.text, captions.attributes, first_vlm)]
    if len(captions.polyps) > 1:
        for index, polyp in enumerate(captions.polyps):
            rows.append(row(polyp_key(frame_key, polyp.index), polyp.text, polyp.attributes,
                            vlm_texts[index] if vlm_texts else ""))
    return rows


def caption_folder(
    input_dir: str | Path,
    output: str | Path,
    masks_dir: str | Path | None = None,
    describer=None,
    on_frame: Callable[[int, int, str], None] | None = None,
) -> CaptionSummary:
    """Caption every frame of `input_dir` that has a mask; write `output` (.csv, .tsv or .jsonl).

    `describer` (engine.captioning.vlm.VisionLanguageDescriber or anything with ``describe(frame, mask)``
    → list of texts per polyp and an ``identity`` string) adds the ``vlm_text`` column.
    """
    started = time.perf_counter()
    output = Path(output)
    if output.suffix.lower() not in CSV_SUFFIXES + JSONL_SUFFIXES:
        raise CaptionCannotStart(f"{output}: the captions file must end in .csv, .tsv or .jsonl")
    if output.is_dir():
        raise CaptionCannotStart(f"{output}: is a folder; --out names the captions file to write")
    try:
        sources = discover(input_dir, masks_dir)
    except InputError as exc:
        raise CaptionCannotStart(str(exc)) from None
    if not sources.frames:
        raise CaptionCannotStart(f"{sources.frames_dir}: no frames found (jpg, jpeg, png, bmp, tif, tiff)")
    if sources.masks_dir is None:
        raise CaptionCannotStart(f"{sources.input_dir}: no masks (give --masks DIR, or use an images/ + masks/ "
                                 "layout): the captioner measures each polyp from its mask")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        probe = output.with_name(f".{output.name}.write-test")
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise CaptionCannotStart(f"{output.parent}: cannot write there ({exc.strerror or exc})") from None
    curator = _curator_texts(output)
    captioner = f"polypforge {__version__} {MEASURE_VERSION}"
    if describer is not None:
        captioner += f"; vlm {describer.identity}"
    settings = {"captioner": captioner, "input": str(Path(input_dir).resolve()),
                "masks": str(sources.masks_dir.resolve())}
    progress = _Progress(output, settings)
    summary = CaptionSummary(output=output, frames=len(sources.frames), notes=list(sources.notes))
    progress.load()

    records = []
    for number, frame in enumerate(sources.frames, start=1):
        if on_frame is not None:
            on_frame(number, len(sources.frames), frame.rel)
        identity = _frame_identity(frame.path)
        mask_identity = _frame_identity(frame.mask_path) if frame.mask_path is not None else None
        previous = progress.done.get(frame.rel)
        if previous is not None and previous.get("identity") == [identity, mask_identity]:
            records.append(previous)
            summary.reused += 1
            continue
        record = {"rel": frame.rel, "identity": [identity, mask_identity]}
        if frame.mask_path is None:
            record["skipped"] = "no mask"
        else:
            try:
                pixels = read_frame(frame.path)
                mask = read_mask(frame.mask_path)
            except InputError as exc:  # names the file
                record["failed"] = str(exc)
            else:
                try:
                    captions = caption_frame(pixels, mask)
                    vlm_texts = describer.describe(pixels, mask) if describer is not None else None
                    record["rows"] = _rows_for(caption_key(frame.rel), captions, captioner, vlm_texts)
                except NoPolyp:
                    record["skipped"] = "empty mask"
                except InputError as exc:
                    record["failed"] = f"{frame.path}: {exc}"
                except (RuntimeError, ValueError) as exc:  # the vision-language model on this frame
                    record["failed"] = f"{frame.path}: the vision-language model failed ({exc})"
        progress.append(record)
        records.append(record)

    rows, frame_attributes = [], []
    for record in records:
        if "rows" in record:
            summary.captioned += 1
            frame_attributes.append(record["rows"][0]["attributes"])
            summary.polyps += record["rows"][0]["attributes"]["polyps"]
            for row in record["rows"]:
                if row["frame"] in curator:
                    row = {**row, "text": curator[row["frame"]], "source": CURATOR}
                    summary.curator_kept += 1
                rows.append(row)
        elif "failed" in record:
            summary.failures.append({"frame": record["rel"], "reason": record["failed"]})
        else:
            summary.without_mask.append(record["rel"])
    if rows:
        write_captions(output, rows, list(CAPTION_COLUMNS))
    else:
        summary.notes.append(f"no frame had a polyp to describe: {output} was not written")
    progress.remove()
    summary.distribution = distribution(frame_attributes)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary
