"""Scoring a segmenter on real test frames at their own resolution: per-frame Dice and IoU, and detection AP
from the masks' boxes.

``score_frames(predict, entries)``: ``predict(frames) → [probability (H, W)]`` (the runtime judge, or a torch
model during ``evaluate``) over (name, path, target) entries (engine.evaluation.segdata.folder_entries). Per
frame: Dice and IoU of p > threshold with the truth (both 1 when both are empty), and for detection the
truth's boxes (one per 8-connected component of the truth mask) and the prediction's boxes (one per
component of p > threshold, scored by the component's mean probability). ``detection_ap`` turns those into
COCO AP50 and AP@[.5:.95] with pycocotools (bbox), the usual polyp-detection figures.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from engine.judge import scores
from engine.masks.instances import MIN_INSTANCE_PIXELS


def mask_boxes(mask: np.ndarray, probability: np.ndarray | None = None) -> list[dict]:
    """[{"bbox": [x, y, w, h], "score": mean p (1 for truth)}] per component of at least MIN_INSTANCE_PIXELS."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
    boxes = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < MIN_INSTANCE_PIXELS:
            continue
        score = 1.0 if probability is None else float(probability[labels == label].mean())
        boxes.append({"bbox": [x, y, w, h], "score": round(score, 6), "area": area})
    return boxes


def score_frame(name: str, probability: np.ndarray, truth: np.ndarray, threshold: float) -> dict:
    predicted = probability > threshold
    return {"frame": name, "dice": scores.dice(predicted, truth), "iou": scores.iou(predicted, truth),
            "width": int(truth.shape[1]), "height": int(truth.shape[0]), "polyp": bool(truth.any()),
            "truth_boxes": mask_boxes(truth), "predicted_boxes": mask_boxes(predicted, probability),
            "frame_score": scores.peak_score(probability)}


def score_frames(predict: Callable[[list[np.ndarray]], list[np.ndarray]], entries: Sequence, threshold: float = 0.5,
                 batch: int = 8, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    from engine.dataset.image_reader import read_frame

    rows = []
    for start in range(0, len(entries), batch):
        chunk = entries[start:start + batch]
        frames = [read_frame(path) for _, path, _, *_ in chunk]
        truths = [target(f.shape[0], f.shape[1]) for (_, _, target, *_), f in zip(chunk, frames)]
        for (name, *_), probability, truth in zip(chunk, predict(frames), truths):
            rows.append(score_frame(name, probability, truth, threshold))
        if progress is not None:
            progress(min(start + batch, len(entries)), len(entries))
    return rows


def detection_ap(rows: Sequence[dict]) -> dict:
    """{"ap50", "ap" (AP@[.5:.95])} over the frames' boxes, COCO bbox evaluation (pycocotools), one category.
    None when no frame holds a true polyp (AP is undefined)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, truth, detections = [], [], []
    for image_id, row in enumerate(rows, start=1):
        images.append({"id": image_id, "width": row["width"], "height": row["height"], "file_name": row["frame"]})
        for box in row["truth_boxes"]:
            truth.append({"id": len(truth) + 1, "image_id": image_id, "category_id": 1, "bbox": box["bbox"],
                          "area": float(box["bbox"][2] * box["bbox"][3]), "iscrowd": 0})
        for box in row["predicted_boxes"]:
            detections.append({"image_id": image_id, "category_id": 1, "bbox": box["bbox"], "score": box["score"]})
    if not truth:
        return {"ap50": None, "ap": None, "truth_boxes": 0, "predicted_boxes": len(detections)}
    if not detections:
        return {"ap50": 0.0, "ap": 0.0, "truth_boxes": len(truth), "predicted_boxes": 0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground = COCO()
        ground.dataset = {"images": images, "annotations": truth, "categories": [{"id": 1, "name": "polyp"}]}
        ground.createIndex()
        found = ground.loadRes(detections)
        evaluation = COCOeval(ground, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    return {"ap": float(max(stats[0], 0.0)), "ap50": float(max(stats[1], 0.0)), "truth_boxes": len(truth),
            "predicted_boxes": len(detections)}


def summarise(rows: Sequence[dict]) -> dict:
    """Mean per-frame Dice/IoU (all frames, and frames with a polyp), AP, false-positive rate on polyp-free frames."""
    def mean(values):
        values = list(values)
        return float(np.mean(values)) if values else None

    polyp = [r for r in rows if r["polyp"]]
    free = [r for r in rows if not r["polyp"]]
    out = {"frames": len(rows), "frames_with_polyp": len(polyp), "dice": mean(r["dice"] for r in rows),
           "iou": mean(r["iou"] for r in rows), "dice_polyp_frames": mean(r["dice"] for r in polyp),
           "iou_polyp_frames": mean(r["iou"] for r in polyp), **detection_ap(rows)}
    if free:
        out["false_positive_rate"] = float(np.mean([bool(r["predicted_boxes"]) for r in free]))
    return out
