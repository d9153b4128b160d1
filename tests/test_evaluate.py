"""evaluate: its numbers equal a hand computation on constructed masks, the leak check refuses, and a killed
evaluation resumes at the run it was in with the same results as an uninterrupted one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import main as app
from conftest import REPO_ROOT
from engine.judge.accuracy import score_frames, summarise
from engine.fileio import save_png_atomic
from cli_helpers import run_main
from judge_helpers import fake_output, polyp_frame, real_folder


def _square(shape, x, y, side=10):
    mask = np.zeros(shape, bool)
    mask[y:y + side, x:x + side] = True
    return mask


def test_scores_equal_a_hand_computation(tmp_path):
    shape = (40, 40)
    truths = [_square(shape, 5, 5), _square(shape, 20, 20), np.zeros(shape, bool)]
    predictions = [_square(shape, 5, 5).astype(np.float32) * 0.9,  # exact: Dice 1, IoU 1
                   _square(shape, 25, 20).astype(np.float32) * 0.8,  # shifted 5 px: overlap 50 of 100 + 100
                   np.zeros(shape, np.float32)]  # polyp-free frame, nothing predicted: Dice 1, IoU 1
    entries = []
    for i, truth in enumerate(truths):
        path = tmp_path / f"f{i}.png"
        save_png_atomic(path, np.full(shape + (3,), 100, np.uint8))
        entries.append((f"f{i}.png", path, lambda h, w, t=truth: t, None))
    by_frame = iter(predictions)
    rows = score_frames(lambda frames: [next(by_frame) for _ in frames], entries, batch=1)
    assert [r["dice"] for r in rows] == pytest.approx([1.0, 0.5, 1.0])
    assert [r["iou"] for r in rows] == pytest.approx([1.0, 50 / 150, 1.0])
    summary = summarise(rows)
    assert summary["dice"] == pytest.approx(2.5 / 3) and summary["iou"] == pytest.approx((2 + 1 / 3) / 3)
    assert summary["dice_polyp_frames"] == pytest.approx(0.75)
    # boxes: frame 0 a true positive at every IoU threshold (score 0.9), frame 1 a false positive (box IoU 1/3,
    # score 0.8); 2 true boxes. Precision 1 up to recall 0.5, nothing beyond: COCO's 101-point AP = 51/101
    assert summary["truth_boxes"] == 2 and summary["predicted_boxes"] == 2
    assert summary["ap50"] == pytest.approx(51 / 101) and summary["ap"] == pytest.approx(51 / 101)
    assert summary["false_positive_rate"] == 0.0


def test_paired_difference_and_statement():
    from engine.evaluation.evaluation_report import paired

    def run(dice, frames):
        return {"summary": {"dice": dice, "iou": dice / 2, "ap50": None, "ap": None},
                "frames": [{"frame": f"f{i}", "dice": d} for i, d in enumerate(frames)]}

    results = {"real": {0: run(0.5, [0.4, 0.6]), 1: run(0.6, [0.5, 0.7]), 2: run(0.7, [0.6, 0.8])},
               "real+synthetic": {0: run(0.55, [0.5, 0.6]), 1: run(0.62, [0.55, 0.69]), 2: run(0.76, [0.7, 0.82])}}
    diff = paired(results, ("real", "real+synthetic"))
    assert diff["dice"]["differences"] == pytest.approx([0.05, 0.02, 0.06])
    assert diff["dice"]["mean"] == pytest.approx(13 / 300) and diff["dice"]["std"] == pytest.approx(
        np.std([0.05, 0.02, 0.06], ddof=1))
    from scipy.stats import ttest_rel

    assert diff["dice"]["p_value"] == pytest.approx(ttest_rel([0.55, 0.62, 0.76], [0.5, 0.6, 0.7]).pvalue)
    assert diff["ap50"]["mean"] is None
    assert diff["per_frame_dice"]["frames"] == 2
    assert "higher" in diff["statement"] and "t-test" in diff["statement"]


def _real_folder(root, seeds):
    return real_folder(root, seeds)


def _synthetic(root, seeds, source_sha=None):
    variants = []
    for seed in seeds:
        frame, mask = polyp_frame(seed, 96, 80)
        variants.append({"name": f"s{seed}", "image": frame, "region": mask, "mode": "add",
                         "source_sha256": source_sha(seed) if source_sha else f"{seed:064d}"})
    return fake_output(root, variants)


def test_the_leak_check_refuses_in_one_line(tmp_path, capsys):
    from engine.evaluation.segdata import file_sha256

    train = _real_folder(tmp_path / "train", range(100, 106))
    test = _real_folder(tmp_path / "test", range(200, 204))
    leaky = _synthetic(tmp_path / "synthetic", range(300, 303),
                       source_sha=lambda seed: file_sha256(test / "images" / "p201.png"))
    code = app.main(["evaluate", "--train", str(train), "--synthetic", str(leaky), "--test", str(test),
                     "--out", str(tmp_path / "eval"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: 3 synthetic variant(s) were made from test frames") and "p201.png" in err[-1]
    # a real training frame that is also a test frame (same bytes, another name)
    (train / "images" / "copy.png").write_bytes((test / "images" / "p202.png").read_bytes())
    clean = _synthetic(tmp_path / "clean", range(300, 303))
    assert app.main(["evaluate", "--train", str(train), "--synthetic", str(clean), "--test", str(test),
                     "--out", str(tmp_path / "eval"), "--quiet"]) == 2
    assert "real training frame(s) are also test frames" in capsys.readouterr().err
    assert not (tmp_path / "eval" / "runs").exists()


EVALUATE = ["evaluate", "--seeds", "1", "--steps", "30", "--size", "32",
            "--widths", "4,8,16", "--validate-every", "10", "--threads", "1", "--quiet"]


def test_evaluate_resumes_at_the_run_it_was_in(tmp_path):
    train = _real_folder(tmp_path / "train", range(100, 112))
    test = _real_folder(tmp_path / "test", range(200, 204))
    synthetic = _synthetic(tmp_path / "synthetic", range(300, 306))
    data = ["--train", str(train), "--synthetic", str(synthetic), "--test", str(test)]
    straight = run_main(EVALUATE + data + ["--out", str(tmp_path / "a")])
    assert straight.returncode == 0, straight.stderr[-3000:]
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert set(report["runs"]) == {"real", "real+synthetic"} and len(report["runs"]["real"]) == 1
    assert report["synthetic"]["used"] == 6 and report["difference"]["statement"]
    assert (tmp_path / "a" / "report.html").read_text().count("data:image/png;base64,") == 1

    out = tmp_path / "b"
    process = subprocess.Popen([sys.executable, "main.py", *EVALUATE, *data, "--out", str(out)], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = out / "runs" / "real-synthetic-seed0" / "checkpoints" / "step-00000010"
    deadline = time.time() + 300
    while not second.exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "results" / "real-seed0.json").is_file()
    assert not (out / "results" / "real-synthetic-seed0.json").exists()
    resumed = run_main(EVALUATE + data + ["--out", str(out)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "real-seed0: done earlier, reused" in resumed.stderr
    again = json.loads((out / "report.json").read_text())
    for arm in ("real", "real+synthetic"):
        for seed in ("0",):
            assert again["runs"][arm][seed]["summary"] == report["runs"][arm][seed]["summary"], (arm, seed)
    # other settings in the same folder are refused
    changed = run_main([*EVALUATE[:4], "20", *EVALUATE[5:], *data, "--out", str(out)])
    assert changed.returncode == 2 and "other settings" in changed.stderr


def test_holdout_follows_the_trainers_rule_and_by_rank_still_holds_out():
    from engine.dataset.splits import hash_position, is_held_out
    from engine.evaluation.segdata import holdout

    names = [f"frame{i:04d}.jpg" for i in range(400)]
    for name in names:
        stem = name[:-4]
        assert is_held_out(stem, 0.1) == (hash_position(stem) < 0.1)
    kept, held = holdout(names)
    assert {names[i][:-4] for i in held} == {n[:-4] for n in names if is_held_out(n[:-4], 0.1)}
    rest = [names[i] for i in kept]  # what a test split by the same rule leaves for training
    assert holdout(rest)[1] == [min(range(len(rest)), key=lambda i: hash_position(rest[i][:-4]))]
    _, by_rank = holdout(rest, by_rank=True)
    assert len(by_rank) == round(0.1 * len(rest))
    assert max(hash_position(rest[i][:-4]) for i in by_rank) < min(
        hash_position(rest[i][:-4]) for i in range(len(rest)) if i not in set(by_rank))


def test_evaluate_without_pycocotools_says_how_to_install_it_before_training(tmp_path, monkeypatch, capsys):
    import importlib.util

    import main as app

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pycocotools" else real_find_spec(name, *a))
    code = app.main(["evaluate", "--train", str(tmp_path / "t"), "--synthetic", str(tmp_path / "s"), "--test",
                     str(tmp_path / "x"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pycocotools" in err[0] and "pip install" in err[0]
    assert not (tmp_path / "out").exists()
