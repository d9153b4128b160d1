"""`evaluate --trainer ultralytics`: the downstream model is an Ultralytics YOLO segmenter (yolo11n-seg, trained
from its architecture file: no pretrained weights exist offline), trained in Ultralytics' own Python.

Why its own Python: Ultralytics needs torchvision, and PyPI's torchvision does not import beside the CPU torch
2.13.0 that PolypForge pins (``operator torchvision::nms does not exist``). The combination that installs and
imports here is torch 2.14.1 + torchvision 0.29.1 + ultralytics 8.4.190 (`make ultralytics-env` builds
.venv-ultralytics). This module never imports ultralytics: it writes each run's data as a YOLO segment dataset
(the same frames, masks and held-out validation frames the judge trainer gets, polygons from the masks'
outlines), runs ultralytics_worker.py in that Python, and scores the worker's confidence maps with the same
scorer as the judge trainer (engine.judge.accuracy), so both trainers' figures mean the same thing.

Budget: the same number of training samples as the judge trainer (steps × batch size), as whole epochs over the
arm's pool (at least 1), unless ``ultralytics_epochs`` is given.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import InputError
from engine.fileio import atomic_write_bytes

REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("ultralytics_worker.py")
ENV_VARIABLE = "POLYPFORGE_ULTRALYTICS_PYTHON"
DEFAULT_ENV = REPO / ".venv-ultralytics"
MODEL = "yolo11n-seg.yaml"
CONFIDENCE_THRESHOLD = 0.25  # Ultralytics' own default confidence for predictions
CURVE_METRIC = "val_map50_mask"


def ultralytics_python(explicit: str | os.PathLike | None = None) -> Path:
    """The Python that runs Ultralytics: --ultralytics-python, $POLYPFORGE_ULTRALYTICS_PYTHON, this Python when it
    can import ultralytics and torchvision, or the repository's .venv-ultralytics; a one-line InputError else."""
    for candidate in (explicit, os.environ.get(ENV_VARIABLE)):
        if candidate:
            path = Path(candidate)
            if not path.is_file():
                raise InputError(f"{path}: no such Python (the Ultralytics environment's bin/python)")
            return path
    if importlib.util.find_spec("ultralytics") is not None and _torchvision_imports():
        return Path(sys.executable)
    default = DEFAULT_ENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if default.is_file():
        return default
    raise InputError("--trainer ultralytics needs an Ultralytics environment: `make ultralytics-env` (torch 2.14.1 "
                     "+ torchvision 0.29.1 + ultralytics 8.4.190 in .venv-ultralytics), or --ultralytics-python PATH")


def _torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # the CPU torch pin: "operator torchvision::nms does not exist"
        return False
    return True


def _polygon_line(mask: np.ndarray) -> list[str]:
    """YOLO segment rows (class 0, normalised outline) for each instance of a cached mask."""
    from engine.masks.instances import mask_polygons, split_instances

    side_h, side_w = mask.shape
    rows = []
    for instance in split_instances(mask > 0.5):
        for polygon in mask_polygons(instance):
            xs, ys = np.asarray(polygon[0::2]) / side_w, np.asarray(polygon[1::2]) / side_h
            points = " ".join(f"{x:.6f} {y:.6f}" for x, y in zip(np.clip(xs, 0, 1), np.clip(ys, 0, 1)))
            rows.append(f"0 {points}")
    return rows


def write_yolo_split(folder: Path, data) -> int:
    """images/ + labels/ of a SegmentationSet (its cached frames and masks): one PNG and one .txt per frame."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for index in range(len(data)):
        stem = f"{index:06d}"
        Image.fromarray(data.images[index]).save(folder / "images" / f"{stem}.png")
        (folder / "labels" / f"{stem}.txt").write_text("\n".join(_polygon_line(data.masks[index])) + "\n",
                                                       encoding="utf-8")
    return len(data)


def write_dataset(root: Path, train, val) -> Path:
    """A YOLO segment dataset (train/, val/, data.yaml) written once per run; returns data.yaml."""
    data_yaml = root / "data.yaml"
    if data_yaml.is_file():
        return data_yaml
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    write_yolo_split(staging / "train", train)
    write_yolo_split(staging / "val", val)
    shutil.rmtree(root, ignore_errors=True)
    staging.rename(root)
    text = f"path: {root}\ntrain: train/images\nval: val/images\nnames:\n  0: polyp\n"
    atomic_write_bytes(data_yaml, text.encode("utf-8"))
    return data_yaml


def epochs_for(pool_size: int, steps: int, batch_size: int, explicit: int | None = None) -> int:
    """Whole epochs giving about as many training samples as the judge trainer's steps × batch."""
    if explicit:
        return int(explicit)
    return max(1, round(steps * batch_size / max(1, pool_size)))


def _squeezed_test_images(folder: Path, test_entries, size: int) -> list[str]:
    """The test frames resized to the training side (squeezed, like the training frames): what the model sees."""
    from PIL import Image

    from engine.dataset.image_reader import read_frame

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (_, path, *_) in enumerate(test_entries):
        target = folder / f"{index:06d}.png"
        if not target.is_file():
            image = Image.fromarray(read_frame(path)).resize((size, size), Image.BILINEAR)
            temporary = target.with_name(target.name + ".tmp.png")
            image.save(temporary)
            os.replace(temporary, target)
        paths.append(str(target))
    return paths


def _die_with_parent() -> None:  # the worker must not outlive a killed evaluation (Linux)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def read_curve(run_dir: Path) -> list[dict]:
    """Per epoch: the mask mAP50 on the validation frames and the training losses, from Ultralytics' results.csv."""
    import csv

    path = run_dir / "train" / "results.csv"
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            row = {k.strip(): v.strip() for k, v in row.items() if k}
            try:
                entry = {"step": int(float(row["epoch"]))}
                if "metrics/mAP50(M)" in row:
                    entry[CURVE_METRIC] = float(row["metrics/mAP50(M)"])
                if "train/seg_loss" in row:
                    entry["loss"] = float(row["train/seg_loss"])
            except (KeyError, ValueError):
                continue
            rows.append(entry)
    return rows


def run_ultralytics(pool, val, test_entries, seed: int, settings, run_dir: Path, python: Path,
                    log: Callable[[str], None]) -> dict:
    """Train one arm × seed in the Ultralytics Python and score it on the test frames (rows as the judge trainer's)."""
    from PIL import Image

    from engine.judge.accuracy import score_frame

    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    imgsz = 32 * max(1, math.ceil(settings.size / 32))
    epochs = epochs_for(len(pool), settings.steps, settings.batch_size, settings.ultralytics_epochs)
    job = {"data": str(write_dataset(run_dir / "data", pool, val)), "model": MODEL, "run_dir": str(run_dir),
           "epochs": epochs, "imgsz": imgsz, "batch": settings.batch_size, "seed": seed,
           "threads": settings.threads or os.cpu_count() or 1,
           "test_images": _squeezed_test_images(run_dir / "test_images", test_entries, imgsz),
           "predictions": str(run_dir / "predictions")}
    job_path = run_dir / "job.json"
    atomic_write_bytes(job_path, (json.dumps(job, indent=1) + "\n").encode("utf-8"))
    log(f"  ultralytics: {MODEL} from scratch, {epochs} epoch(s) of {len(pool)} frames at {imgsz}², batch "
        f"{settings.batch_size}, in {python}")
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    with (run_dir / "worker.log").open("ab") as handle:
        done = subprocess.run([str(python), str(WORKER), str(job_path)], stdout=handle, stderr=subprocess.STDOUT,
                              env=env, preexec_fn=_die_with_parent if os.name == "posix" else None)
    if done.returncode != 0:
        tail = (run_dir / "worker.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        raise InputError(f"{run_dir / 'worker.log'}: the Ultralytics run failed (exit {done.returncode})"
                         + (f": {tail[0][:300]}" if tail else ""))
    from engine.dataset.image_reader import read_frame

    rows = []
    for index, (name, path, target, *_) in enumerate(test_entries):
        frame = read_frame(path)
        height, width = frame.shape[:2]
        with Image.open(run_dir / "predictions" / f"{index:06d}.png") as image:
            confidence = np.asarray(image.resize((width, height), Image.NEAREST), np.float32) / 255.0
        rows.append(score_frame(name, confidence, target(height, width), CONFIDENCE_THRESHOLD))
    return {"rows": rows, "curve": read_curve(run_dir), "epochs": epochs,
            "train_minutes": round((time.perf_counter() - started) / 60.0, 2)}


def describe(settings) -> dict:
    return {"name": "ultralytics", "description": f"Ultralytics YOLO ({MODEL}) trained from scratch in its own "
                                                  "environment", "model": MODEL,
            "size": 32 * max(1, math.ceil(settings.size / 32)), "batch_size": settings.batch_size,
            "epochs": settings.ultralytics_epochs or "from the budget (steps × batch / pool size)",
            "steps": settings.steps, "threshold": CONFIDENCE_THRESHOLD, "curve_metric": CURVE_METRIC}
