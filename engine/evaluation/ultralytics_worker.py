"""One `evaluate --trainer ultralytics` run, executed by the Ultralytics environment's Python.

Standalone on purpose (stdlib, numpy, Pillow and ultralytics only; nothing from engine/): Ultralytics needs
torchvision, which does not import beside PolypForge's CPU torch pin, so it lives in its own venv
(`make ultralytics-env`) and the driver (engine.evaluation.ultralytics_trainer) runs this file there:

    python ultralytics_worker.py JOB.json

JOB.json: {"data": data.yaml, "model": "yolo11n-seg.yaml", "run_dir", "epochs", "imgsz", "batch", "seed",
"threads", "test_images": [paths], "predictions": folder}. It trains from the architecture yaml (no pretrained
weights exist offline), on the CPU, deterministic, with no plots (they fetch a font) and with Ultralytics'
settings, analytics and hub sync kept in the run folder and off. A killed run resumes from its last complete epoch
(a snapshot of last.pt/best.pt/results.csv per save, named by checkpoint/latest.json once complete; Ultralytics
writes last.pt in place). Then it
predicts every test image at its own resolution and writes predictions/<index>.png: per pixel the confidence
(× 255) of the most confident instance mask covering it, 0 elsewhere; and train_done.json / predictions/done.json
markers so a rerun skips what is finished.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _offline(run_dir: Path) -> None:
    """Before ultralytics is imported: its settings file in the run folder, no sync, no hub, no update checks."""
    config = run_dir / "ultralytics-config"
    config.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(config)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")


def _settings(run_dir: Path) -> None:
    """Ultralytics' own settings for this run: no sync (analytics), its folders inside the run folder."""
    from ultralytics import settings

    settings.update({"sync": False, "runs_dir": str(run_dir), "weights_dir": str(run_dir / "weights"),
                     "datasets_dir": str(run_dir / "data")})


SNAPSHOT_FILES = ("weights/last.pt", "weights/best.pt", "results.csv")
SNAPSHOT_POINTER = "latest.json"


def _replace_copy(source: Path, target: Path) -> None:
    import shutil

    temporary = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _snapshot(trainer, run_dir: Path) -> None:
    """Ultralytics' on_model_save: copy last.pt, best.pt and results.csv, whole, into run_dir/checkpoint/.

    Ultralytics writes last.pt in place (Path.write_bytes), so a kill during that write leaves a truncated file
    that no resume can read. Each save is copied into its own folder (checkpoint/epoch-N/) and only then named by
    checkpoint/latest.json (temp file, then rename), so the snapshot a resume finds always holds one epoch's
    weights and its results rows together: a kill halfway through copying leaves the previous one in charge."""
    import shutil

    train_dir = Path(trainer.save_dir)
    root = run_dir / "checkpoint"
    name = f"epoch-{int(trainer.epoch) + 1}"
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "weights").mkdir(parents=True, exist_ok=True)
    for file in SNAPSHOT_FILES:
        if (train_dir / file).is_file():
            shutil.copyfile(train_dir / file, folder / file)
    _write_json(root / SNAPSHOT_POINTER, {"folder": name})
    for stale in root.iterdir():  # older epochs' folders, and any half-copied one a kill left behind
        if stale.is_dir() and stale.name != name:
            shutil.rmtree(stale, ignore_errors=True)


def _latest_snapshot(run_dir: Path) -> Path | None:
    """The folder checkpoint/latest.json names, when it holds a last.pt; None before the first complete save."""
    root = run_dir / "checkpoint"
    try:
        folder = root / json.loads((root / SNAPSHOT_POINTER).read_text(encoding="utf-8"))["folder"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if (folder / "weights" / "last.pt").is_file() else None


def _restore(run_dir: Path) -> bool:
    """Before a resume: put the last complete snapshot back in place of whatever the kill left in train/.
    False (and the half-done train/ folder removed) when the run died before its first checkpoint landed."""
    import shutil

    train_dir = run_dir / "train"
    snapshot = _latest_snapshot(run_dir)
    if snapshot is None:
        shutil.rmtree(train_dir, ignore_errors=True)
        return False
    for file in SNAPSHOT_FILES:
        source, target = snapshot / file, train_dir / file
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            _replace_copy(source, target)
        else:
            target.unlink(missing_ok=True)  # e.g. a best.pt begun after the snapshot: it may be cut short
    return True


def _train(job: dict, run_dir: Path) -> None:
    from ultralytics import YOLO

    done = run_dir / "train_done.json"
    if done.is_file():
        return
    last = run_dir / "train" / "weights" / "last.pt"
    if (run_dir / "train").is_dir() and _restore(run_dir):
        print(f"resuming the killed run from {last} (its last complete epoch)", flush=True)
        model = YOLO(str(last))
        model.add_callback("on_model_save", lambda trainer: _snapshot(trainer, run_dir))
        try:
            model.train(resume=True)
        except AssertionError as exc:  # killed after the last epoch, before train_done.json: nothing left to train
            if "nothing to resume" not in str(exc):
                raise
    else:
        model = YOLO(job["model"], task="segment")
        model.add_callback("on_model_save", lambda trainer: _snapshot(trainer, run_dir))
        model.train(
            data=job["data"], epochs=int(job["epochs"]), imgsz=int(job["imgsz"]), batch=int(job["batch"]),
            seed=int(job["seed"]), deterministic=True, workers=0, device="cpu", amp=False, plots=False,
            pretrained=False, project=str(run_dir), name="train", exist_ok=True, verbose=False, patience=0,
            cache=False, val=True)
    best = run_dir / "train" / "weights" / "best.pt"
    _write_json(done, {"weights": str(best if best.is_file() else last)})


def _predict(job: dict, run_dir: Path) -> None:
    import numpy as np
    from PIL import Image
    from ultralytics import YOLO

    out = Path(job["predictions"])
    out.mkdir(parents=True, exist_ok=True)
    if (out / "done.json").is_file():
        return
    weights = json.loads((run_dir / "train_done.json").read_text(encoding="utf-8"))["weights"]
    model = YOLO(weights, task="segment")
    for index, path in enumerate(job["test_images"]):
        target = out / f"{index:06d}.png"
        if target.is_file():
            continue
        with Image.open(path) as image:
            width, height = image.size
        result = model.predict(path, imgsz=int(job["imgsz"]), conf=0.01, device="cpu", retina_masks=True,
                               verbose=False)[0]
        confidence = np.zeros((height, width), np.float32)
        if result.masks is not None and len(result.masks):
            masks = result.masks.data.cpu().numpy() > 0.5
            scores = result.boxes.conf.cpu().numpy()
            for mask, score in zip(masks, scores):
                if mask.shape != confidence.shape:  # retina masks are at the image's size; be safe anyway
                    mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height))) > 127
                confidence = np.maximum(confidence, mask * float(score))
        temporary = target.with_name(target.name + ".tmp")
        Image.fromarray(np.round(confidence * 255).astype(np.uint8)).save(temporary, format="PNG")
        os.replace(temporary, target)
    _write_json(out / "done.json", {"frames": len(job["test_images"])})


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    run_dir = Path(job["run_dir"])
    _offline(run_dir)
    import torch

    torch.set_num_threads(int(job.get("threads") or os.cpu_count() or 1))
    _settings(run_dir)
    _train(job, run_dir)
    _predict(job, run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
