"""COCO, YOLO (detect, segment), data.yaml and the contact sheet, rebuilt from the manifest's accepted
variants in one pass over the records (a list, or a manifest streamed line by line): each writer takes one
record at a time, so the rebuild of 100k variants holds none of them, nor their images, in memory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

from engine.dataset.coco_writer import CocoWriter
from engine.dataset.contact_sheet import ContactSheetWriter
from engine.dataset.yolo_writer import YoloDetectWriter, YoloSegmentWriter


def rebuild_outputs(output: Path, records: Iterable[dict], formats, source_paths: dict[str, Path],
                    timings: dict[str, float] | None = None) -> int:
    """Write every annotation file from the ok records whose image is on disk; returns how many there were.
    `timings`, when given, receives the seconds each writer took."""
    output = Path(output)
    writers = {}
    if "coco" in formats:
        writers["coco"] = CocoWriter(output / "annotations" / "instances.json")
    if "yolo" in formats:
        writers["yolo"] = YoloDetectWriter(output)
    if "yolo-seg" in formats:
        writers["yolo-seg"] = YoloSegmentWriter(output)
    writers["contact-sheet"] = ContactSheetWriter(output, source_paths)
    spent = dict.fromkeys(writers, 0.0)
    written = 0
    try:
        for record in records:
            if record.get("status") != "ok" or not (output / record["image"]).is_file():
                continue
            written += 1
            for name, writer in writers.items():
                started = time.perf_counter()
                writer.add(record)
                spent[name] += time.perf_counter() - started
        for name, writer in writers.items():
            started = time.perf_counter()
            writer.finish()
            spent[name] += time.perf_counter() - started
    except BaseException:
        if "coco" in writers:
            writers["coco"].abort()
        raise
    if timings is not None:
        for name, seconds in spent.items():
            timings[name] = timings.get(name, 0.0) + seconds
    return written
