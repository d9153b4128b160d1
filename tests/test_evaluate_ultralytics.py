"""`evaluate --trainer ultralytics`: the YOLO segment data it writes round-trips to the masks, its budget and
its scoring of the worker's confidence maps are the judge trainer's, a missing environment is one line, and —
where an Ultralytics environment exists (`make ultralytics-env`; CI runs `make test-ultralytics`) — a real
yolo11n-seg run from scratch end to end, offline, with both arms in the report."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_main
from conftest import REPO_ROOT
from engine.errors import InputError
from engine.evaluation import segdata
from engine.evaluation import ultralytics_trainer as ut
from engine.fileio import save_png_atomic
from judge_helpers import fake_output, polyp_frame


def _real_folder(root, seeds, width=96, height=80):
    for seed in seeds:
        frame, mask = polyp_frame(seed, width, height)
        save_png_atomic(root / "images" / f"p{seed}.png", frame)
        save_png_atomic(root / "masks" / f"p{seed}.png", mask.astype(np.uint8) * 255)
    return root


def _synthetic(root, seeds):
    variants = []
    for seed in seeds:
        frame, mask = polyp_frame(seed, 96, 80)
        variants.append({"name": f"s{seed}", "image": frame, "region": mask, "mode": "add",
                         "source_sha256": f"{seed:064d}"})
    return fake_output(root, variants)


def test_yolo_segment_labels_round_trip_to_the_masks(tmp_path):
    from engine.dataset.labels import read_yolo
    from engine.judge.scores import iou
    from engine.masks.instances import Instance

    data = segdata.from_folder(_real_folder(tmp_path / "real", range(10, 14)))
    assert ut.write_yolo_split(tmp_path / "yolo", data) == 4
    side = data.images.shape[1]
    for index in range(4):
        label = tmp_path / "yolo" / "labels" / f"{index:06d}.txt"
        instances = read_yolo(label, side, side)
        assert instances and all(isinstance(i, Instance) for i in instances)
        drawn = np.zeros((side, side), bool)
        for instance in instances:
            drawn |= instance.raster(side, side)
        assert iou(drawn, data.masks[index] > 0.5) > 0.85, index
        assert (tmp_path / "yolo" / "images" / f"{index:06d}.png").is_file()


def test_dataset_yaml_and_budget(tmp_path):
    data = segdata.from_folder(_real_folder(tmp_path / "real", range(20, 26)))
    yaml = ut.write_dataset(tmp_path / "run" / "data", data.subset(range(4)), data.subset([4, 5]))
    text = yaml.read_text()
    assert "train: train/images" in text and "val: val/images" in text and "0: polyp" in text
    assert len(list((tmp_path / "run" / "data" / "val" / "labels").glob("*.txt"))) == 2
    assert ut.epochs_for(903, 600, 8) == 5 and ut.epochs_for(5000, 10, 8) == 1 and ut.epochs_for(10, 1, 1, 7) == 7


def test_the_workers_confidence_maps_are_scored_like_the_judge_trainer(tmp_path, monkeypatch):
    """The driver's half of a run: given the worker's output (confidence PNGs), the rows are score_frame's."""
    from engine.judge.accuracy import score_frame
    from PIL import Image

    test = _real_folder(tmp_path / "test", range(30, 32))
    _, entries = segdata.folder_entries(test)
    run_dir = tmp_path / "run"
    (run_dir / "predictions").mkdir(parents=True)
    maps = []
    for index, (_, path, target, _) in enumerate(entries):
        truth = target(80, 96)
        confidence = np.where(truth, 0.8 if index == 0 else 0.1, 0.0)  # frame 1 below the 0.25 threshold
        maps.append(confidence)
        Image.fromarray(np.round(confidence * 255).astype(np.uint8)).save(run_dir / "predictions" / f"{index:06d}.png")
    (run_dir / "train_done.json").write_text("{}")
    (run_dir / "predictions" / "done.json").write_text("{}")
    worker = tmp_path / "worker.py"  # the finished run's worker: nothing left to do
    worker.write_text("import sys; sys.exit(0)\n")
    monkeypatch.setattr(ut, "WORKER", worker)

    class Settings:
        size, steps, batch_size, threads, ultralytics_epochs = 64, 10, 2, 1, None

    data = segdata.from_folder(_real_folder(tmp_path / "real", range(40, 43)))
    run = ut.run_ultralytics(data, data.subset([0]), entries, 0, Settings, run_dir, Path(sys.executable),
                             log=lambda text: None)
    assert [r["dice"] for r in run["rows"]] == pytest.approx([1.0, 0.0])
    expected = score_frame(entries[0][0], np.round(maps[0] * 255) / 255, entries[0][2](80, 96), ut.CONFIDENCE_THRESHOLD)
    assert run["rows"][0]["predicted_boxes"] == expected["predicted_boxes"]
    assert json.loads((run_dir / "job.json").read_text())["epochs"] == 7  # 10 steps × 2 frames over 3 frames


def test_no_ultralytics_environment_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ut.ENV_VARIABLE, raising=False)
    monkeypatch.setattr(ut, "DEFAULT_ENV", tmp_path / "nowhere")
    monkeypatch.setattr(ut, "_torchvision_imports", lambda: False)
    with pytest.raises(InputError, match="make ultralytics-env"):
        ut.ultralytics_python()
    with pytest.raises(InputError, match="no such Python"):
        ut.ultralytics_python(tmp_path / "missing-python")
    train = _real_folder(tmp_path / "train", range(50, 56))
    test = _real_folder(tmp_path / "test", range(60, 62))
    synthetic = _synthetic(tmp_path / "synthetic", range(70, 72))
    done = run_main(["evaluate", "--trainer", "ultralytics", "--train", str(train), "--synthetic", str(synthetic),
                     "--test", str(test), "--out", str(tmp_path / "out"), "--quiet"])
    assert done.returncode == 2 and "make ultralytics-env" in done.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_a_real_yolo_run_end_to_end(tmp_path):
    try:
        python = ut.ultralytics_python()
    except InputError as exc:
        pytest.skip(str(exc))
    train = _real_folder(tmp_path / "train", range(100, 116))
    test = _real_folder(tmp_path / "test", range(200, 204))
    synthetic = _synthetic(tmp_path / "synthetic", range(300, 306))
    out = tmp_path / "eval"
    done = run_main(["evaluate", "--trainer", "ultralytics", "--ultralytics-python", str(python), "--seeds", "1",
                     "--ultralytics-epochs", "2", "--size", "64", "--batch-size", "4", "--threads", "1", "--quiet",
                     "--train", str(train), "--synthetic", str(synthetic), "--test", str(test), "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["trainer"]["name"] == "ultralytics" and set(report["runs"]) == {"real", "real+synthetic"}
    for arm in ("real", "real+synthetic"):
        run = report["runs"][arm]["0"]
        assert len(run["frames"]) == 4 and 0.0 <= run["summary"]["dice"] <= 1.0
        assert run["curve"] and all(row["step"] >= 0 for row in run["curve"])
    run_dir = out / "runs" / "real-seed0"
    assert (run_dir / "train" / "weights" / "last.pt").is_file() and (run_dir / "predictions" / "done.json").is_file()
    # Ultralytics' settings stayed in the run folder, with sync off
    settings = json.loads(next((run_dir / "ultralytics-config").rglob("settings.json")).read_text())
    assert settings["sync"] is False and settings["runs_dir"] == str(run_dir)
    # a rerun reuses every finished run
    again = run_main(["evaluate", "--trainer", "ultralytics", "--ultralytics-python", str(python), "--seeds", "1",
                      "--ultralytics-epochs", "2", "--size", "64", "--batch-size", "4", "--threads", "1", "--quiet",
                      "--train", str(train), "--synthetic", str(synthetic), "--test", str(test), "--out", str(out)])
    assert again.returncode == 0 and "done earlier, reused" in again.stderr


def test_a_killed_yolo_run_resumes_from_its_last_epoch(tmp_path):
    """kill -9 of `evaluate --trainer ultralytics` after the first epoch, with last.pt left cut short: the worker
    dies with it, and the rerun continues the same YOLO run from the last complete snapshot (Ultralytics' resume)
    instead of starting it again or failing on the truncated file."""
    try:
        python = ut.ultralytics_python()
    except InputError as exc:
        pytest.skip(str(exc))
    train = _real_folder(tmp_path / "train", range(400, 424))
    test = _real_folder(tmp_path / "test", range(500, 503))
    synthetic = _synthetic(tmp_path / "synthetic", range(600, 604))
    out = tmp_path / "eval"
    args = ["evaluate", "--trainer", "ultralytics", "--ultralytics-python", str(python), "--seeds", "1",
            "--ultralytics-epochs", "6", "--size", "64", "--batch-size", "4", "--threads", "1", "--quiet",
            "--train", str(train), "--synthetic", str(synthetic), "--test", str(test), "--out", str(out)]
    process = subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    run_dir = out / "runs" / "real-seed0"
    last = run_dir / "train" / "weights" / "last.pt"
    snapshot = run_dir / "checkpoint" / "latest.json"  # written once a save's snapshot is complete
    deadline = time.time() + 300
    while not snapshot.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert snapshot.exists(), "the first epoch never finished"
    # Ultralytics writes last.pt in place: a kill during that write leaves it cut short. Make that the case here
    # (it is what an unlucky kill did in CI), so the resume has to come from the complete snapshot.
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert not (run_dir / "train_done.json").exists(), "the run finished before it could be killed"
    time.sleep(1.0)  # the worker gets SIGKILL from its parent's death (PR_SET_PDEATHSIG)
    job = str(run_dir / "job.json")
    workers = subprocess.run(["pgrep", "-f", job], capture_output=True, text=True).stdout.split()
    assert not workers, f"a worker outlived the killed evaluation: {workers}"

    resumed = run_main(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (run_dir / "worker.log").read_text(encoding="utf-8", errors="replace")
    assert "resuming the killed run from" in log
    epochs = [row["step"] for row in ut.read_curve(run_dir)]
    assert epochs == sorted(set(epochs)) and len(epochs) == 6, epochs  # each epoch once, none trained twice
    report = json.loads((out / "report.json").read_text())
    assert set(report["runs"]) == {"real", "real+synthetic"}


def _worker_module():
    import importlib.util

    path = REPO_ROOT / "engine" / "evaluation" / "ultralytics_worker.py"
    spec = importlib.util.spec_from_file_location("ultralytics_worker_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_kill_while_a_snapshot_is_copied_resumes_from_the_previous_complete_one(tmp_path):
    """The snapshot protocol without Ultralytics: epoch 1 is saved whole; epoch 2's copy is cut off after last.pt
    (what a kill between two copies leaves). The restore must bring back epoch 1's weights AND its results rows,
    never epoch 2's weights beside epoch 1's rows or no rows at all (CI lost epoch 1's row that way)."""
    from types import SimpleNamespace

    worker = _worker_module()
    run_dir = tmp_path / "run"
    train = run_dir / "train"
    (train / "weights").mkdir(parents=True)

    def save(epoch: int) -> None:
        (train / "weights" / "last.pt").write_bytes(b"weights of epoch %d" % epoch)
        (train / "weights" / "best.pt").write_bytes(b"best after epoch %d" % epoch)
        rows = "".join(f"{e},0.5\n" for e in range(1, epoch + 1))
        (train / "results.csv").write_text("epoch,metric\n" + rows, encoding="utf-8")

    assert worker._restore(run_dir) is False and not train.exists(), "no snapshot yet: start over"
    (train / "weights").mkdir(parents=True)
    save(1)
    worker._snapshot(SimpleNamespace(save_dir=str(train), epoch=0), run_dir)
    save(2)
    half = run_dir / "checkpoint" / "epoch-2" / "weights"  # the kill: epoch 2's folder begun, pointer not moved
    half.mkdir(parents=True)
    (half / "last.pt").write_bytes((train / "weights" / "last.pt").read_bytes())
    (train / "weights" / "last.pt").write_bytes(b"weig")  # and Ultralytics' in-place write cut short

    assert worker._restore(run_dir) is True
    assert (train / "weights" / "last.pt").read_bytes() == b"weights of epoch 1"
    assert (train / "results.csv").read_text(encoding="utf-8").splitlines()[1:] == ["1,0.5"]
    # The next complete save takes over and clears the older and the half-copied folders.
    save(2)
    worker._snapshot(SimpleNamespace(save_dir=str(train), epoch=1), run_dir)
    assert sorted(p.name for p in (run_dir / "checkpoint").iterdir()) == ["epoch-2", "latest.json"]
    assert worker._restore(run_dir) and (train / "weights" / "last.pt").read_bytes() == b"weights of epoch 2"
