"""Detectability: does the judge see what each variant claims? For the quality report.

Per ok variant of a PolypForge output (its manifest record):

- its labelled region R: add mode, what was generated (the variant's instance mask, else its generated
  instances); transplant mode, where the moved polyp now is (its ``transplant`` instances), judged as an added
  polyp; remove mode, where the removed polyps were (the record's ``removed`` instances);
- the judge's verdict on the variant at R (engine.judge.scores.judge_region): add — region IoU and
  confidence, found = IoU ≥ 0.5; remove — found = a polyp-like blob (peak p > threshold) is still there;
- the same verdict on its real source frame at the same R ("before"): in add mode with a random or retrieved
  region it should find nothing there; in remove mode it should find the real polyp.

The ceiling: the judge on the real source frames at their own labelled polyps (mask file, else labels),
found = region IoU ≥ 0.5. A generator whose added polyps the judge finds as often as real ones is at the
ceiling; far below it, its polyps do not look like polyps to a segmenter trained on real ones.

Aggregated per bundle / mask source / mode: count, found rate, mean score, IoU and confidence, with the
"before" rate beside. Source frames are found through the output's job.json (its input folder); when the
folder has moved, the "before" and ceiling figures are left out with a note.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.errors import PolypForgeError
from engine.masks.size_prior import SIZE_BIN_EDGES, SIZE_BIN_LABELS
from engine.masks.size_prior import size_bin as size_prior_bin
from engine.judge.preprocess import resize_probability
from engine.judge.scores import judge_region

Progress = Callable[[str, int, int], None]


NEW_POLYP_MODES = ("add", "transplant")  # modes whose variant holds a new polyp (judged as one at its region)


def judged_as(record: dict) -> str:
    """How the judge reads a variant: "remove" (no polyp should be left at the region) or "add" (a polyp
    should be there: an added one, or a transplanted one at its new place)."""
    return "remove" if record.get("mode") == "remove" else "add"


def variant_region(output: Path, record: dict) -> np.ndarray | None:
    """The labelled region of a variant (see the module docstring), or None when nothing is recorded."""
    from engine.dataset.image_reader import read_mask
    from engine.masks.instances import Instance

    height, width = int(record["height"]), int(record["width"])
    if record.get("mode") == "transplant":
        moved = [Instance.from_json(i) for i in record.get("instances", []) if i.get("origin") == "transplant"]
        if not moved:
            return None
        region = np.zeros((height, width), bool)
        for instance in moved:
            region |= instance.raster(height, width)
        return region
    if record.get("mode") == "remove":
        removed = [Instance.from_json(i) for i in record.get("removed", [])]
        if not removed:
            return None
        region = np.zeros((height, width), bool)
        for instance in removed:
            region |= instance.raster(height, width)
        return region
    mask_file = output / record["mask"] if record.get("mask") else None
    if mask_file is not None and mask_file.is_file():
        from PIL import Image

        region = np.asarray(Image.open(mask_file)) > 0
        if region.any():
            return region
    generated = [Instance.from_json(i) for i in record.get("instances", []) if i.get("origin") == "generated"]
    if not generated:
        return read_mask(mask_file) if mask_file is not None and mask_file.is_file() else None
    region = np.zeros((height, width), bool)
    for instance in generated:
        region |= instance.raster(height, width)
    return region


def _source_frames(output: Path) -> tuple[dict, str | None]:
    """{source rel → SourceFrame} of the job that wrote `output`, and a note when they cannot be found."""
    from engine.dataset.discovery import discover

    try:
        settings = json.loads((output / "job.json").read_text(encoding="utf-8"))["settings"]
        sources = discover(settings["input"], settings.get("masks"), settings.get("labels"), settings.get("split_file"))
    except (OSError, ValueError, KeyError, PolypForgeError) as exc:
        return {}, f"source frames not found through {output / 'job.json'} ({exc}): no 'before' or ceiling figures"
    return {f.rel: f for f in sources.frames}, None


def _truth_of(frame, height: int, width: int) -> np.ndarray:
    from engine.dataset.image_reader import read_mask
    from engine.dataset.labels import read_yolo

    if frame.mask_path is not None:
        return read_mask(frame.mask_path)
    instances = frame.label_instances or (read_yolo(frame.yolo_path, width, height) if frame.yolo_path else [])
    truth = np.zeros((height, width), bool)
    for instance in instances:
        truth |= instance.raster(height, width)
    return truth


def look_at_source(judge, source) -> tuple[np.ndarray, tuple[int, int], dict | None]:
    """The judge on a real source frame: its model-size probability map, the frame's (height, width), and the
    ceiling row (does it find the frame's own labelled polyps?), None for a frame without one."""
    from engine.dataset.image_reader import read_frame

    pixels = read_frame(source.path)
    height, width = pixels.shape[:2]
    small, _ = judge.run([pixels])
    truth = _truth_of(source, height, width)
    if not truth.any():
        return small[0], (height, width), None
    verdict = judge_region(resize_probability(small[0], width, height), truth, "add", judge.threshold)
    return small[0], (height, width), {"source_frame": source.rel, "found": verdict.found,
                                       "iou": round(verdict.iou, 4), "confidence": round(verdict.confidence, 4),
                                       "area": round(float(truth.mean()), 5)}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _aggregate(rows: list[dict]) -> dict:
    judged = [r for r in rows if r.get("verdict")]
    before = [r for r in judged if r.get("before")]
    return {
        "count": len(judged),
        "found_rate": _mean(float(r["verdict"]["found"]) for r in judged),
        "mean_score": _mean(r["verdict"]["score"] for r in judged),
        "mean_iou": _mean(r["verdict"]["iou"] for r in judged),
        "mean_confidence": _mean(r["verdict"]["confidence"] for r in judged),
        "before_found_rate": _mean(float(r["before"]["found"]) for r in before),
        "before_mean_score": _mean(r["before"]["score"] for r in before),
    }


# Region sizes as a share of the frame: a whole-frame judge at 128² sees a polyp of 1 % of the frame as ~160
# pixels and finds small real polyps far less often than large ones, so each size is compared with the judge on
# real polyps of the same size.
# The report's size bins (engine.masks.size_prior: <2, 2-5, 5-10, 10-20, >20 % of the frame) as (low, high) shares.
SIZE_BINS = tuple(zip((0.0, *SIZE_BIN_EDGES), (*SIZE_BIN_EDGES, 1.01)))


def size_bin(area: float | None) -> int | None:
    """The index in SIZE_BINS of a share of the frame; None when there is none or it lies outside [0, 1.01)."""
    if area is None or not 0.0 <= area < SIZE_BINS[-1][1]:
        return None
    return SIZE_BIN_LABELS.index(size_prior_bin(area))


def by_region_size(rows: list[dict], ceiling_rows: list[dict]) -> list[dict]:
    """Per size bin: the add-mode variants' found rate and the judge's found rate on the real source polyps of
    that size (the ceiling at matched size)."""
    out = []
    for index, (low, high) in enumerate(SIZE_BINS):
        variants = [r for r in rows if r.get("verdict") and r.get("mode") in NEW_POLYP_MODES
                    and size_bin(r.get("region_area")) == index]
        real = [c for c in ceiling_rows if size_bin(c.get("area")) == index]
        out.append({"area_from": low, "area_to": min(high, 1.0), "variants": len(variants),
                    "found_rate": _mean(float(r["verdict"]["found"]) for r in variants),
                    "real_polyps": len(real), "real_found_rate": _mean(float(c["found"]) for c in real)})
    return out


def compute_detectability(image_set, judge, progress: Progress | None = None,
                          cancelled: Callable[[], bool] | None = None) -> dict:
    """Detectability figures of a PolypForge output's ok variants (an engine.metrics.features.ImageSet)."""
    from engine.dataset.image_reader import read_frame
    from engine.errors import Cancelled
    from engine.dataset.manifest import manifest_groups

    output = Path(image_set.root)
    sources, note = _source_frames(output)
    notes = [note] if note else []
    rows: list[dict] = []
    source_views: dict[str, tuple] = {}  # source rel → (model-size probability, frame shape): small in memory
    ceilings: dict[str, dict | None] = {}

    total = len(image_set.items)
    for done, item in enumerate(image_set.items, start=1):
        if cancelled is not None and cancelled():
            raise Cancelled("quality report cancelled")
        record = item.record or {}
        row = {"synthetic": str(item.path.relative_to(output)), "mode": record.get("mode"),
               "mask_source": record.get("mask_source"), "source_frame": record.get("source_frame"),
               "verdict": None, "before": None}
        try:
            region = variant_region(output, record)
            if region is None:
                row["note"] = "no labelled region recorded"
            else:
                frame = read_frame(item.path)
                view = judge.look(frame)
                if view.probability.shape != region.shape:
                    raise PolypForgeError(f"{item.path}: image and region differ in size")
                row["verdict"] = judge_region(view.probability, region, judged_as(record), judge.threshold).to_json()
                row["region_area"] = round(float(region.mean()), 5)
                source = sources.get(record.get("source_frame"))
                if source is not None:
                    if source.rel not in source_views:
                        small, shape, ceilings[source.rel] = look_at_source(judge, source)
                        source_views[source.rel] = (small, shape)
                    small, shape = source_views[source.rel]
                    if shape == region.shape:
                        probability = resize_probability(small, shape[1], shape[0])
                        row["before"] = judge_region(probability, region, judged_as(record),
                                                     judge.threshold).to_json()
        except PolypForgeError as exc:
            row["note"] = str(exc)
        rows.append(row)
        if progress:
            progress("judge", done, total)

    groups = []
    for key, values in manifest_groups([item.record for item in image_set.items]).items():
        for value, indices in sorted(values.items()):
            groups.append({"by": key, "value": value, **_aggregate([rows[i] for i in indices])})
    ceiling_rows = [ceiling for rel, ceiling in sorted(ceilings.items()) if ceiling is not None]
    ceiling = {
        "source_frames_with_polyp": len(ceiling_rows),
        "found_rate": _mean(float(r["found"]) for r in ceiling_rows),
        "mean_iou": _mean(r["iou"] for r in ceiling_rows),
        "mean_confidence": _mean(r["confidence"] for r in ceiling_rows),
        "per_frame": ceiling_rows,
        "rule": "the judge on the real source frames at their own labelled polyps: found = region IoU ≥ 0.5",
    }
    return {"judge": judge.describe(), "overall": _aggregate(rows), "groups": groups, "ceiling": ceiling,
            "by_region_size": by_region_size(rows, ceiling_rows), "per_image": rows, "notes": notes,
            "rules": {"add": "score = mean judge probability over the generated region; found = IoU of the judge's "
                             "components touching the region with it ≥ 0.5",
                      "remove": "score = 1 − peak judge probability in the removed polyp's place; found = a "
                                "polyp-like blob (peak > threshold) is still there",
                      "before": "the same verdict on the real source frame at the same region"}}
