"""A job's folders at consortium scale, written quickly for tests/benchmarks/bench_scale.py.

``INPUT/centre_CC/patient_PPP/frame_NNNNNN.png``: N tiny frames (the same 32×32 PNG bytes each), 100 per
folder, two folder levels; the job's output inside the input (``INPUT/augmented``, the layout of the
issue's first mistake) holding a manifest.jsonl of N lines shaped like a real job's (random mask source, one
generated polygon and, for every third frame, a carried one; 3 % failed, 2 % skipped) whose last line is
torn, and one variant image per ok line. No model runs: the bookkeeping is what is measured.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import numpy as np
from PIL import Image

FRAMES_PER_FOLDER = 100
FOLDERS_PER_CENTRE = 50
DONE_MARKER = ".fixture-complete"


def _tiny_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def frame_rel(index: int) -> str:
    folder = index // FRAMES_PER_FOLDER
    return f"centre_{folder // FOLDERS_PER_CENTRE:02d}/patient_{folder % FOLDERS_PER_CENTRE:03d}/frame_{index:06d}.png"


def _polygon(rng: random.Random, cx: float, cy: float, radius: float, points: int = 18) -> list[float]:
    coords = []
    for k in range(points):
        angle = 2 * 3.14159265 * k / points
        r = radius * rng.uniform(0.8, 1.0)
        coords += [round(cx + r * np.cos(angle), 0), round(cy + r * np.sin(angle), 0)]
    return [float(v) for v in coords]


def _instance(rng: random.Random, origin: str) -> dict:
    cx, cy, radius = rng.uniform(60, 260), rng.uniform(60, 200), rng.uniform(15, 40)
    poly = _polygon(rng, cx, cy, radius)
    xs, ys = poly[0::2], poly[1::2]
    bbox = [min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1]
    return {"area": round(3.14159 * radius * radius, 1), "bbox": bbox, "origin": origin, "polygons": [poly],
            "shape": "polygon"}


def manifest_record(index: int, rng: random.Random) -> dict:
    rel = frame_rel(index)
    flat = rel.removesuffix(".png").replace("/", "__")
    image = f"images/train/{flat}__add-random-v00.png"
    record = {
        "bundle": "demo-sd-inpaint", "bundle_id": "3255a75a" * 8, "engine_version": "0.1.0", "image": image,
        "key": f"{rel}#0", "label_source": None, "mask_file": None, "mask_source": "random", "mode": "add",
        "seed": rng.getrandbits(32), "source_frame": rel, "source_sha256": f"{index:064x}", "split": "train",
        "variant": 0,
    }
    draw = rng.random()
    if draw < 0.03:
        return record | {"status": "failed", "reason": f"{rel}: damaged image data (truncated)"}
    if draw < 0.05:
        return record | {"status": "skipped", "reason": "no free, visible place for a polyp on this frame"}
    instances = [_instance(rng, "generated")] + ([_instance(rng, "mask")] if index % 3 == 0 else [])
    return record | {
        "status": "ok", "mask": image.replace("images/", "masks/", 1), "width": 320, "height": 256,
        "instances": instances, "removed": [], "prompt": "Polyp", "prompt_source": "bundle", "negative_prompt": "",
        "steps": 20, "scheduler": "dpm++", "guidance": 7.5, "working_size": [320, 256], "feather_px": 3,
        "provider": "cpu", "seconds": round(rng.uniform(10, 30), 3),
    }


def build_fixture(root: Path, frames: int, log=print) -> tuple[Path, Path]:
    """(input folder, output folder inside it); reused when already complete."""
    input_dir = root / "frames"
    output = input_dir / "augmented"
    if (root / DONE_MARKER).is_file():
        return input_dir, output
    frame_bytes = _tiny_png(0)
    variant_bytes = _tiny_png(1)
    rng = random.Random(frames)
    (output / "images" / "train").mkdir(parents=True, exist_ok=True)
    made_folders: set[str] = set()
    with open(output / "manifest.jsonl", "wb") as manifest:
        for index in range(frames):
            rel = frame_rel(index)
            folder = rel.rsplit("/", 1)[0]
            if folder not in made_folders:
                (input_dir / folder).mkdir(parents=True, exist_ok=True)
                made_folders.add(folder)
            (input_dir / rel).write_bytes(frame_bytes)
            record = manifest_record(index, rng)
            if record["status"] == "ok":
                (output / record["image"]).write_bytes(variant_bytes)
            line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
            if index == frames - 1:
                line = line[: len(line) // 2]  # the run was killed while writing its last line
            manifest.write(line)
            if log and index and index % 20000 == 0:
                log(f"  fixture: {index} of {frames} frames written")
        manifest.flush()
        os.fsync(manifest.fileno())
    settings = {"input": str(input_dir), "mask_source": "random", "mode": "add", "variants": 1, "seed": 0}
    (output / "job.json").write_text(json.dumps({"settings": settings, "formats": ["coco", "yolo", "yolo-seg"]}))
    (root / DONE_MARKER).write_text("ok\n")
    return input_dir, output
