"""evaluate as a learning curve: the subsets are stable and nested, an arm's synthetic data comes from its own
subset only (a variant made from another frame is refused in one line), every arm gets the same budget, the
plan is printed with an estimate, the report shows every arm and fraction, runs added later reuse the earlier
ones, and a killed evaluation resumes to the same results files."""

from __future__ import annotations

import json
import random
import re
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
from judge_helpers import fake_output, polyp_frame

DEMO_MODEL = REPO_ROOT / "exported_models" / "demo-sd-inpaint"
TINY = ["--seeds", "2", "--max-steps", "40", "--validate-every", "10", "--patience", "3", "--size", "32",
        "--widths", "4,8,16", "--threads", "1", "--quiet"]
TIMING_KEYS = ("train_minutes",)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """40 generated training frames, 6 test frames, 4 polyp-free frames, and an add-mode job file (demo model)."""
    from engine.samples import generate_sample_set

    root = tmp_path_factory.mktemp("curve")
    generate_sample_set(root / "train", count=40, seed=1, width=96, height=80, with_polyps_every=1)
    generate_sample_set(root / "test", count=6, seed=2, width=96, height=80, with_polyps_every=1)
    generate_sample_set(root / "normal", count=4, seed=3, width=96, height=80, with_polyps_every=0)
    job = root / "add.toml"
    job.write_text(f'model = "{DEMO_MODEL}"\nmode = "add"\nmask_source = "random"\nsteps = 2\nformats = ["coco"]\n'
                   f'input = "ignored"\noutput = "ignored"\n', encoding="utf-8")
    return root


def _data(root, *fractions):
    return ["--train", root / "train", "--test", root / "test", "--test", f"again={root / 'test'}",
            "--normals", root / "normal", "--arm", f"add={root / 'add.toml'}",
            "--real-fractions", ",".join(fractions)]


def _without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}


def test_subsets_are_stable_and_nested_and_validation_is_held_out_of_them():
    from engine.dataset.splits import nested_subset
    from engine.evaluation.curve_arms import make_fraction
    from engine.evaluation.segdata import SegmentationSet

    names = [f"images/frame{i:03d}.png" for i in range(200)]
    shuffled = random.Random(0).sample(names, len(names))
    chosen = {f: {names[i] for i in nested_subset(names, f)} for f in (0.1, 0.25, 1.0)}
    assert chosen[0.1] == {shuffled[i] for i in nested_subset(shuffled, 0.1)}  # the order does not matter
    assert chosen[0.1] < chosen[0.25] < chosen[1.0] and len(chosen[0.1]) == 20 and len(chosen[0.25]) == 50
    moved = [f"elsewhere/{n.split('/')[1]}" for n in names]  # nor the folder
    assert {m.split("/")[1] for m in (moved[i] for i in nested_subset(moved, 0.1))} == {
        n.split("/")[1] for n in chosen[0.1]}
    real = SegmentationSet(names, np.zeros((200, 1, 1, 3), np.uint8), np.zeros((200, 1, 1), np.float32),
                           [f"{i:064d}" for i in range(200)], [None] * 200, [None] * 200)
    part = make_fraction(real, 0.25)
    assert set(part.subset.names) == chosen[0.25]
    assert set(part.train.names) | set(part.val.names) == chosen[0.25] and not set(part.train.names) & set(part.val.names)
    assert len(part.val) == 10


def test_subset_draws_are_other_subsets_of_the_same_size_each_stable_and_nested():
    from engine.evaluation.curve_arms import make_fraction, subset_salt
    from engine.evaluation.segdata import SegmentationSet

    names = [f"images/frame{i:03d}.png" for i in range(300)]
    real = SegmentationSet(names, np.zeros((300, 1, 1, 3), np.uint8), np.zeros((300, 1, 1), np.float32),
                           [f"{i:064d}" for i in range(300)], [None] * 300, [None] * 300)
    subsets = {draw: set(make_fraction(real, 0.1, draw=draw).subset.names) for draw in (0, 1, 2)}
    assert subsets[0] == set(make_fraction(real, 0.1).subset.names)  # draw 0: the curve's subset, as it always was
    assert all(len(s) == 30 for s in subsets.values())
    assert subsets[1] != subsets[0] and subsets[2] != subsets[1] and subsets[2] != subsets[0]
    # independent draws overlap about as chance does (30 of 300 each: 3 expected), not mostly
    assert len(subsets[1] & subsets[0]) < 12 and len(subsets[2] & subsets[1]) < 12
    assert subsets[1] == set(make_fraction(real, 0.1, draw=1).subset.names)  # stable
    assert subsets[1] < set(make_fraction(real, 0.25, draw=1).subset.names)  # nested within the draw
    with pytest.raises(ValueError, match="subset draw must be 0 or more"):
        subset_salt(-1)


def test_a_subset_draw_is_its_own_curve_recorded_and_kept_apart(frames, tmp_path):
    from engine.dataset.discovery import read_split_file

    tiny = [*TINY[:1], "1", *TINY[2:]]  # one seed
    plans = {}
    for draw in (0, 1):
        out = tmp_path / f"draw{draw}"
        done = run_main(["evaluate", *_data(frames, "0.25"), "--subset-draw", str(draw), "--plan", "--out", out, *tiny])
        assert done.returncode == 0, done.stderr[-3000:]
        marked = read_split_file(out / "subsets" / "0.25" / "split.tsv")
        plans[draw] = {name for name, split in marked.items() if split == "train"}
    assert len(plans[0]) == len(plans[1]) == 8 and plans[0] != plans[1]
    assert "each fraction's subset (draw 1):" in done.stderr
    out = tmp_path / "draw1"
    run = run_main(["evaluate", *_data(frames, "0.25"), "--subset-draw", "1", "--out", out, *tiny])
    assert run.returncode == 0, run.stderr[-3000:]
    record = json.loads((out / "results" / "0.25" / "add-seed0.json").read_text())
    assert record["key"]["subset_draw"] == 1
    sources = {json.loads(line)["source_frame"] for line in
               (out / "synthetic" / "0.25" / "add" / "manifest.jsonl").read_text().splitlines()}
    assert sources and sources <= plans[1]  # the arm's job read this draw's frames only
    report = json.loads((out / "report.json").read_text())
    assert report["subset_draw"] == 1 and "(fraction 0.25, subset draw 1:" in (out / "report.html").read_text()
    # another draw in the same folder is refused before anything runs (its variants were made from other frames)
    other = run_main(["evaluate", *_data(frames, "0.25"), "--subset-draw", "2", "--out", out, *tiny])
    assert other.returncode == 2 and "holds the runs of subset draw 1, not 2; give each draw its own --out" in (
        other.stderr)
    # a report of another draw refuses this draw's runs; draw 0 keys stay as they always were (no subset_draw)
    report_other = run_main(["evaluate", *_data(frames, "0.25"), "--out", out, "--report-only", *tiny])
    assert report_other.returncode == 2 and "was made with other settings (subset_draw" in report_other.stderr
    bad = run_main(["evaluate", *_data(frames, "0.25"), "--subset-draw", "-1", "--out", out, *tiny])
    assert bad.returncode == 2 and "--subset-draw" in bad.stderr


def test_subset_draws_run_one_curve_each_and_compare_the_arms_over_them(frames, tmp_path):
    out = tmp_path / "draws"
    poisson = tmp_path / "poisson.toml"  # no model: the test stays fast; not a copy-paste base (it blends)
    poisson.write_text('mode = "transplant"\nharmonize = "poisson"\nvariants = 1\n', encoding="utf-8")
    data = ["--train", frames / "train", "--test", frames / "test", "--test", f"again={frames / 'test'}",
            "--normals", frames / "normal", "--arm", f"add={poisson}", "--arm", "copy-paste",
            "--real-fractions", "0.25", "--subset-draws", "2", "--out", out]
    tiny = [a for i, a in enumerate(TINY) if a != "--seeds" and (i == 0 or TINY[i - 1] != "--seeds")]  # 1 a draw
    plan = run_main(["evaluate", *data, "--plan", *tiny])
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "subset draw 1 of 2:" in plan.stderr and "subset draw 2 of 2:" in plan.stderr
    assert "× 3 arm(s) (real, add, copy-paste) × 1 seed(s) = 3 runs" in plan.stderr
    first = run_main(["evaluate", *data, *tiny])
    assert first.returncode == 0, first.stderr[-3000:]
    for draw in (1, 2):
        record = json.loads((out / f"draw-{draw}" / "results" / "0.25" / "add-seed0.json").read_text())
        assert record["key"]["subset_draw"] == draw and (out / f"draw-{draw}" / "report.html").is_file()
    summary = json.loads((out / "draws.json").read_text())
    assert summary["bases"] == ["real", "copy-paste"] and summary["draws_planned"] == 2
    point = next(p for p in summary["points"] if p["test"] == "test")
    assert sorted(point["dice"]["add"]) == ["1", "2"]
    pairs = [(c["base"], c["arm"]) for c in point["comparisons"]]
    assert pairs == [("real", "add"), ("real", "copy-paste"), ("copy-paste", "add")]
    add = point["comparisons"][0]
    by_draw = [point["dice"]["add"][d] - point["dice"]["real"][d] for d in ("1", "2")]
    assert add["draws"] == [1, 2] and add["dice"]["mean"] == pytest.approx(sum(by_draw) / 2)
    assert add["won"] == sum(d > 0 for d in by_draw) and add["by_size"]
    assert "add vs real on test at fraction 0.25: " in first.stdout and "over 2 subset draws" in first.stdout
    text = (out / "draws.md").read_text()
    assert "## Paired by draw (fraction 0.25, test set test)" in text and "| add − copy-paste | 2 |" in text
    assert "<h2>Per polyp size, paired by draw (fraction 0.25, test set again)</h2>" in (out / "draws.html").read_text()
    again = run_main(["evaluate", *data, *tiny])  # finished draws are reused
    assert again.returncode == 0 and again.stderr.count("done earlier, reused") == 6
    assert "training on" not in again.stderr
    both = run_main(["evaluate", *data, "--subset-draw", "1", *tiny])
    assert both.returncode == 2 and "--subset-draws N runs draws 1 … N" in both.stderr
    # a copy-paste base is a transplant that pastes: one leaving harmonize out is redrawn by the model (the default)
    from engine.evaluation.curve_plan import CurveSettings
    from engine.evaluation.subset_draws import copy_paste_arms

    redrawn = tmp_path / "redrawn.toml"
    redrawn.write_text('mode = "transplant"\nvariants = 1\n', encoding="utf-8")
    pasted = tmp_path / "pasted.toml"
    pasted.write_text('mode = "transplant"\nharmonize = "none"\n', encoding="utf-8")
    arms = {"redrawn": redrawn, "pasted": pasted, "add": poisson}
    assert copy_paste_arms(CurveSettings(train=frames, tests={}, out=out, arms=arms)) == ["pasted"]


def test_a_variant_made_outside_the_subset_is_refused_in_one_line(frames, tmp_path, capsys):
    import main as app
    from engine.dataset.splits import nested_subset
    from engine.evaluation.segdata import file_sha256

    names = sorted(p.name for p in (frames / "train" / "images").iterdir())
    inside = {names[i] for i in nested_subset(names, 0.25)}
    outside = next(n for n in names if n not in inside)
    frame, mask = polyp_frame(5, 96, 80)
    synthetic = fake_output(tmp_path / "synthetic", [
        {"name": "v1", "image": frame, "region": mask, "mode": "add",
         "source_sha256": file_sha256(frames / "train" / "images" / outside)}])
    code = app.main(["evaluate", "--train", str(frames / "train"), "--test", str(frames / "test"),
                     "--synthetic", f"0.25={synthetic}", "--real-fractions", "0.25", "--out", str(tmp_path / "eval"),
                     *map(str, TINY)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: synthetic variant images/train/v1.png of arm synthetic at fraction 0.25 was not "
                              "made from that fraction's")
    assert not (tmp_path / "eval" / "results").exists()
    # variants of the subset's training frames are used; those of its validation frames are left out, with a note
    from engine.dataset.discovery import read_split_file

    assert app.main(["evaluate", "--train", str(frames / "train"), "--test", str(frames / "test"), "--plan",
                     "--real-fractions", "0.25", "--out", str(tmp_path / "plan")]) == 0
    marked = read_split_file(tmp_path / "plan" / "subsets" / "0.25" / "split.tsv")
    trained = [n for n in names if marked[n] == "train"]
    validation = [n for n in inside if marked[n] == "test"]
    assert len(trained) == 8 and len(validation) == 2
    variants = [{"name": f"v{i}", "image": polyp_frame(10 + i, 96, 80)[0], "region": mask, "mode": "add",
                 "source_sha256": file_sha256(frames / "train" / "images" / source)}
                for i, source in enumerate([*trained[:3], validation[0]])]
    fair = fake_output(tmp_path / "fair", variants)
    code = app.main(["evaluate", "--train", str(frames / "train"), "--test", str(frames / "test"),
                     "--synthetic", f"0.25={fair}", "--real-fractions", "0.25", "--out", str(tmp_path / "eval"),
                     *map(str, TINY), "--seeds", "1"])
    assert code == 0, capsys.readouterr().err[-2000:]
    record = json.loads((tmp_path / "eval" / "results" / "0.25" / "synthetic-seed0.json").read_text())
    assert record["synthetic_frames"] == 3
    assert "1 variant(s) made from the validation frames were left out" in (tmp_path / "eval" / "report.html").read_text()


def test_the_curve_its_plan_budgets_report_and_runs_added_later(frames, tmp_path):
    out = tmp_path / "eval"
    first = run_main(["evaluate", *_data(frames, "0.25"), "--out", out, *TINY])
    assert first.returncode == 0, first.stderr[-3000:]
    plan = first.stderr
    assert "plan: 1 fraction(s) (0.25) × 2 arm(s) (real, add) × 2 seed(s) = 4 runs" in plan
    assert "s per step measured here (1 thread(s)) → at most" in plan and "0 run(s) done earlier" in plan
    # the arm's batch job read the subset's training frames only
    from engine.dataset.discovery import read_split_file

    marked = read_split_file(out / "subsets" / "0.25" / "split.tsv")
    report = json.loads((out / "report.json").read_text())
    point = report["points"][0]
    assert sum(split == "train" for split in marked.values()) == point["train_frames"] == 8 and len(marked) == 40
    sources = {json.loads(line)["source_frame"] for line in
               (out / "synthetic" / "0.25" / "add" / "manifest.jsonl").read_text().splitlines()}
    assert sources and all(marked[s] == "train" for s in sources)

    # a fraction added later: the earlier runs are reused, the new ones trained
    second = run_main(["evaluate", *_data(frames, "0.25", "0.5"), "--out", out, *TINY])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "4 run(s) done earlier are reused" in second.stderr and second.stderr.count("done earlier, reused") == 4
    records = {p.relative_to(out / "results").as_posix(): json.loads(p.read_text())
               for p in (out / "results").rglob("*.json")}
    assert sorted(records) == [f"{f}/{arm}-seed{s}.json" for f in ("0.25", "0.5") for arm in ("add", "real")
                               for s in (0, 1)]
    # the same budget and stopping rule for every arm, recorded; the same seeds and validation frames per fraction
    budgets = {json.dumps(r["budget"], sort_keys=True) for r in records.values()}
    assert len(budgets) == 1 and "at most 40 steps" in records["0.5/add-seed0.json"]["budget"]["stopping"]
    assert all(r["steps"] <= 40 for r in records.values())
    for fraction in ("0.25", "0.5"):
        for seed in (0, 1):
            real, add = records[f"{fraction}/real-seed{seed}.json"], records[f"{fraction}/add-seed{seed}.json"]
            assert real["key"]["val_digest"] == add["key"]["val_digest"] and real["seed"] == add["seed"] == seed
            assert add["synthetic_frames"] == add["real_frames"] == real["real_frames"]  # ratio 1
            assert set(add["tests"]) == {"test", "again"} and add["normals"]["frames"] == 4
    # the report: the curve first, every arm, fraction and test set, a verdict per arm and test set
    report = json.loads((out / "report.json").read_text())
    assert [p["subset_frames"] for p in report["points"]] == [10, 20] and report["runs_done"] == 8
    assert [(v["arm"], v["test"]) for v in report["verdicts"]] == [("add", "test"), ("add", "again")]
    assert all("at 10 frames" in v["text"] and "at 20 frames" in v["text"] for v in report["verdicts"])
    page = (out / "report.html").read_text()
    assert page.index("learning curve' src='data:image/png;base64,") < page.index("<h2>Verdict</h2>")
    assert "10 real frames (fraction 0.25" in page and "20 real frames (fraction 0.5" in page
    assert "<td>add</td>" in page and "<td>real</td>" in page and "Dice on again" in page
    # a test set added later: the runs are scored on it from their kept weights, not trained again
    third = run_main(["evaluate", *_data(frames, "0.25", "0.5"), "--test", f"clean={frames / 'normal'}", "--out", out,
                      *TINY])
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stderr.count("scored again on the test sets added since") == 8 and "training on" not in third.stderr
    rescored = json.loads((out / "results" / "0.5" / "add-seed1.json").read_text())
    assert set(rescored["tests"]) == {"test", "again", "clean"}
    assert rescored["tests"]["test"] == records["0.5/add-seed1.json"]["tests"]["test"]
    # the report of what is finished, with an arm not run yet: no batch job runs, nothing trains
    only = run_main(["evaluate", *_data(frames, "0.25", "0.5"), "--arm", f"later={frames / 'add.toml'}",
                     "--report-only", "--out", out, *TINY])
    assert only.returncode == 0, only.stderr[-3000:]
    assert "report of the 8 finished runs (12 planned); nothing trained" in only.stderr
    assert "training on" not in only.stderr and not (out / "synthetic" / "0.25" / "later").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["runs_done"] == 8 and report["runs_planned"] == 12
    later = next(v["text"] for v in report["verdicts"] if v["arm"] == "later" and v["test"] == "test")
    assert later == "later vs real on test: not run yet at 10 frames; not run yet at 20 frames."
    assert report["points"][1]["arms"]["add"]["runs"] == 2
    # a ratio the arm's job made too few variants for: trained on what there is, and said so
    more = run_main(["evaluate", *_data(frames, "0.25"), "--ratio-ablation", "2", "--out", out,
                     *[("1" if a == "2" and i and TINY[i - 1] == "--seeds" else a) for i, a in enumerate(TINY)]])
    assert more.returncode == 0, more.stderr[-3000:]
    assert "add ×2 at fraction 0.25: ratio 2 asks 16 variants, the arm has 8: its pool is real + 8" in more.stderr
    assert json.loads((out / "results" / "0.25" / "add-ratio2-seed0.json").read_text())["synthetic_frames"] == 8
    # other settings in the same folder are refused, naming the run (a report too)
    changed = run_main(["evaluate", *_data(frames, "0.25"), "--out", out,
                        *[("30" if a == "40" else a) for a in TINY]])
    assert changed.returncode == 2 and "run 0.25/real-seed0 was made with other settings" in changed.stderr
    changed = run_main(["evaluate", *_data(frames, "0.25"), "--out", out, "--report-only",
                        *[("30" if a == "40" else a) for a in TINY]])
    assert changed.returncode == 2 and "run 0.25/real-seed0 was made with other settings" in changed.stderr


def test_a_killed_evaluation_resumes_to_the_same_results(frames, tmp_path):
    data = [str(a) for a in _data(frames, "0.25")] + ["--ratio-ablation", "0.5"]
    straight = run_main(["evaluate", *data, "--out", tmp_path / "a", *TINY])
    assert straight.returncode == 0, straight.stderr[-3000:]
    out = tmp_path / "b"
    process = subprocess.Popen([sys.executable, "main.py", "evaluate", *data, "--out", str(out), *TINY],
                               cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed once step 10's checkpoint and log are written (the trainer writes log.jsonl just after the checkpoint:
    # a kill between the two leaves the resumed run's curve without the rows before it; its scores are the same).
    run_dir = out / "runs" / "0.25" / "add-seed0"
    deadline = time.time() + 300
    while time.time() < deadline and not ((run_dir / "checkpoints" / "step-00000010").exists() and (
            run_dir / "log.jsonl").is_file() and '"step": 10,' in (run_dir / "log.jsonl").read_text()):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "results" / "0.25" / "real-seed0.json").is_file()
    assert not (out / "results" / "0.25" / "add-seed0.json").exists()
    resumed = run_main(["evaluate", *data, "--out", out, *TINY])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 run(s) done earlier are reused" in resumed.stderr and "1 resume(s) from its checkpoint" in resumed.stderr
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "results").rglob("*.json"))
    assert [p.as_posix() for p in files] == ["results/0.25/add-ratio0.5-seed0.json", "results/0.25/add-ratio0.5-seed1.json",
                                             "results/0.25/add-seed0.json", "results/0.25/add-seed1.json",
                                             "results/0.25/real-seed0.json", "results/0.25/real-seed1.json"]
    for path in files:
        assert _without_timing(json.loads((out / path).read_text())) == _without_timing(
            json.loads((tmp_path / "a" / path).read_text())), path
    ablation = json.loads((out / "results" / "0.25" / "add-ratio0.5-seed0.json").read_text())
    assert ablation["series"] == "add ×0.5" and ablation["synthetic_frames"] == 4
    assert "add ×0.5" in (out / "report.html").read_text()


def test_the_app_entry_reports_progress_and_cancels(frames, tmp_path):
    from engine.evaluation.learning_curve import CurveSettings, run_learning_curve
    from engine.training.task import TrainingInterrupted

    settings = CurveSettings(train=frames / "train", tests={"test": frames / "test"}, out=tmp_path / "eval",
                             fractions=(0.25,), seeds=1, max_steps=20, validate_every=10, size=32, widths=(4, 8, 16),
                             threads=1)
    events = []
    with pytest.raises(TrainingInterrupted):
        run_learning_curve(settings, on_progress=events.append, cancel=lambda: len(events) >= 5, log=lambda t: None)
    assert [e.steps_done for e in events[:5]] == [1, 2, 3, 4, 5] and events[0].steps_total == 20
    assert events[-1].run == "0.25/real-seed0"
    data = run_learning_curve(settings, on_progress=events.append, log=lambda t: None)
    assert events[-1].phase == "done" and data["runs_done"] == 1 and data["verdicts"] == []


def test_confidence_intervals_and_verdicts_equal_a_hand_computation():
    from scipy import stats

    from engine.evaluation.curve_report import verdicts
    from engine.evaluation.evaluation_report import confidence_interval, paired

    diffs = [0.05, 0.04, 0.06]
    half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert confidence_interval(diffs) == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half])
    assert confidence_interval([0.1]) is None and confidence_interval([0.2, 0.2]) == pytest.approx([0.2, 0.2])

    def run(dice):
        return {"summary": {"dice": dice, "iou": None, "ap50": None, "ap": None},
                "frames": [{"frame": "f0", "dice": dice}, {"frame": "f1", "dice": dice / 2}]}

    real = [0.50, 0.60, 0.70]
    helped = paired({"real": {s: run(d) for s, d in enumerate(real)},
                     "add": {s: run(d + x) for s, (d, x) in enumerate(zip(real, diffs))}}, ("real", "add"))
    same = paired({"real": {s: run(d) for s, d in enumerate(real)},
                   "add": {s: run(d + x) for s, (d, x) in enumerate(zip(real, [0.01, -0.02, 0.005]))}}, ("real", "add"))
    p = stats.ttest_rel(np.add(real, diffs), real).pvalue
    assert helped["dice"]["p_value"] == pytest.approx(p) and p < 0.05
    points = [{"subset_frames": 90, "differences": {"add": {"kvasir": helped}}},
              {"subset_frames": 225, "differences": {"add": {"kvasir": same}}}]
    (sentence,) = verdicts(points, ["real", "add"], ["kvasir"])
    assert sentence["text"] == (f"add vs real on kvasir: {np.mean(diffs):+.3f} Dice at 90 frames (p = {p:.2g}, 95 % CI "
                                f"{np.mean(diffs) - half:+.3f} to {np.mean(diffs) + half:+.3f}); no significant effect "
                                f"at 225 frames (-0.002, p = {same['dice']['p_value']:.2g}, 95 % CI "
                                f"{same['dice']['ci95'][0]:+.3f} to {same['dice']['ci95'][1]:+.3f}).")


def test_the_command_line_names_test_sets_and_arms(tmp_path):
    import argparse

    from engine.cli.evaluate import curve_settings, register_commands

    parser = argparse.ArgumentParser()
    register_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", "--train", "t", "--test", "data/kvasir-test", "--test", "cvc=data/cvc",
                              "--out", "o", "--generate", "jobs/transplant_none.toml", "--arm", "add=add.toml",
                              "--synthetic", "0.1=s1", "--real-fractions", "0.25,0.1", "--ratio-ablation", "0.5,2"])
    settings = curve_settings(args)
    assert list(settings.tests) == ["kvasir-test", "cvc"] and settings.fractions == (0.1, 0.25)
    assert settings.arm_names() == ["real", "synthetic", "add", "transplant_none"]
    assert settings.synthetic == {0.1: Path("s1")} and settings.ratio_ablation == (0.5, 2.0)
    assert settings.seeds_at(0.25) == 5 and settings.seeds_at(1.0) == 3 and settings.max_steps == 1500


def test_arm_presets_by_name_and_the_default_arm_write_checked_job_files(frames, tmp_path):
    """--arm NAME names a preset (engine.jobs.arm_presets): its job file is written into --out/jobs/ and read back
    as the batch job reads it; without any arm the preset 'synthetic' is the arm; an unknown name is refused with
    the presets listed."""
    import argparse
    import tomllib

    from engine.cli.evaluate import curve_settings, register_commands
    from engine.jobs import read_job_file

    parser = argparse.ArgumentParser()
    register_commands(parser.add_subparsers(dest="command"))

    def settings_for(*extra):
        return curve_settings(parser.parse_args(["evaluate", "--train", str(frames / "train"), "--test",
                                                 str(frames / "test"), "--out", str(tmp_path / "o"), *extra]))

    settings = settings_for("--arm", "copy-paste", "--arm", "removal", "--arm", "judged=" + str(frames / "add.toml"))
    assert settings.arm_names() == ["real", "copy-paste", "removal", "judged"]
    copy_paste = tomllib.loads(settings.arms["copy-paste"].read_text())
    assert settings.arms["copy-paste"] == tmp_path / "o" / "jobs" / "copy-paste.toml"
    assert copy_paste == {"mode": "transplant", "harmonize": "none", "variants": 1, "seed": 0}
    removal = read_job_file(settings.arms["removal"])
    assert removal["mode"] == "remove" and removal["mask_source"] == "box"
    assert settings.arms["judged"] == frames / "add.toml"
    default = settings_for()
    assert default.arm_names() == ["real", "synthetic"]
    assert tomllib.loads(default.arms["synthetic"].read_text()) == {"mode": "add", "mask_source": "random",
                                                                     "variants": 1, "seed": 0}
    assert settings_for("--synthetic", f"0.1={frames / 'train'}").arm_names() == ["real", "synthetic"]
    with pytest.raises(InputError, match="no such arm preset .*copy-paste"):
        settings_for("--arm", "copypaste")
    with pytest.raises(InputError, match="--arm removal: given twice"):
        settings_for("--arm", "removal", "--arm", "removal")


def test_the_ultralytics_consumer_is_scored_on_every_test_set_and_the_polyp_free_frames(frames, tmp_path, monkeypatch):
    """--trainer ultralytics: one YOLO run per arm × fraction × seed (its worker replaced here by a model that
    predicts a blob on every frame), its rows split back into the test sets and the polyp-free frames."""
    from engine.dataset.image_reader import read_frame
    from engine.evaluation import ultralytics_trainer
    from engine.evaluation.learning_curve import CurveSettings, run_learning_curve
    from engine.judge.accuracy import score_frame

    calls = []

    def fake_run(pool, val, entries, seed, settings, run_dir, python, log):
        calls.append((len(pool), len(val), len(entries), seed, settings.steps))
        rows = []
        for name, path, target, *_ in entries:
            frame = read_frame(path)
            blob = np.zeros(frame.shape[:2], np.float32)
            blob[10:40, 10:40] = 0.9
            rows.append(score_frame(name, blob, target(*frame.shape[:2]), 0.25))
        return {"rows": rows, "curve": [], "epochs": 3, "train_minutes": 0.0}

    monkeypatch.setattr(ultralytics_trainer, "ultralytics_python", lambda explicit=None: Path(sys.executable))
    monkeypatch.setattr(ultralytics_trainer, "run_ultralytics", fake_run)
    settings = CurveSettings(train=frames / "train", tests={"test": frames / "test", "again": frames / "test"},
                             out=tmp_path / "eval", normals=frames / "normal", fractions=(0.25,), seeds=2,
                             max_steps=40, trainer="ultralytics")
    data = run_learning_curve(settings, log=lambda t: None)
    assert calls == [(8, 2, 16, 0, 40), (8, 2, 16, 1, 40)]
    record = json.loads((tmp_path / "eval" / "results" / "0.25" / "real-seed1.json").read_text())
    assert set(record["tests"]) == {"test", "again"} and len(record["tests"]["again"]["frames"]) == 6
    assert record["normals"]["false_positive_rate"] == 1.0 and record["steps"] == "3 epochs"
    assert data["points"][0]["arms"]["real"]["normals_false_positive_rate"]["mean"] == 1.0


def test_the_curves_typed_inputs_are_read_one_way_for_the_command_and_the_app(tmp_path):
    """engine.dataset.curve_inputs: shares in (0, 1], sorted and once; NAME=DIR or DIR named by its folder
    (a job file by its stem); test folders must exist and be named apart."""
    from engine.dataset.curve_inputs import named_path, parse_fractions, parse_test_folders

    assert parse_fractions("0.25, 0.1;0.1") == (0.1, 0.25)
    assert parse_fractions("  ") == ()
    for bad, words in (("0", "(0, 1]"), ("1.5", "(0, 1]"), ("a", "not a number")):
        with pytest.raises(InputError, match=re.escape(words)):
            parse_fractions(bad)
    job = tmp_path / "copy-paste.toml"
    job.write_text("", encoding="utf-8")
    hospital = tmp_path / "hospital.v2"
    hospital.mkdir()
    assert named_path(str(job)) == ("copy-paste", job)
    assert named_path(f" mine = {job} ") == ("mine", job)
    assert parse_test_folders(f"{hospital}\n\nkvasir={tmp_path}\n") == {"hospital.v2": hospital, "kvasir": tmp_path}
    with pytest.raises(InputError, match="two are named 'kvasir'"):
        parse_test_folders([f"kvasir={tmp_path}", f"kvasir={hospital}"])
    with pytest.raises(InputError, match="missing: test folder not found"):
        parse_test_folders([str(tmp_path / "missing")])
    with pytest.raises(InputError, match="at least one test folder"):
        parse_test_folders("")
    assert parse_test_folders([f"far={tmp_path / 'missing'}"], must_exist=False) == {"far": tmp_path / "missing"}
    from engine.evaluation.curve_plan import CurveSettings, check_settings

    with pytest.raises(InputError, match="--test far=.*missing: test folder not found"):
        check_settings(CurveSettings(train=tmp_path, tests={"far": tmp_path / "missing"}, out=tmp_path / "out"))


def test_the_report_breaks_test_dice_down_by_the_size_of_the_polyps():
    """curve_report.size_breakdown: each test frame falls in the size bin of its polyps' share of the frame; an
    arm's cell is the mean over seeds of its mean Dice there, with the paired difference from real per seed."""
    from engine.evaluation.curve_report import size_breakdown

    def run(dices):  # frames of 100×100: polyps of 1 %, 3 % and 30 % (and one polyp-free frame, left out)
        frames = [{"dice": d, "width": 100, "height": 100, "truth_boxes": [{"area": a}]}
                  for d, a in zip(dices, (100, 300, 3000))]
        frames.append({"dice": 1.0, "width": 100, "height": 100, "truth_boxes": []})
        return {"tests": {"t": {"frames": frames}}}

    results = {"real": {0: run((0.1, 0.5, 0.8)), 1: run((0.3, 0.5, 0.6))},
               "copy-paste": {0: run((0.2, 0.7, 0.8)), 1: run((0.3, 0.9, 0.6))}}
    table = size_breakdown(results, ["real", "copy-paste"], "t")
    assert table["bins"] == ["<2", "2-5", ">20"] and table["frames"] == {"<2": 1, "2-5": 1, ">20": 1}
    assert table["arms"]["real"]["<2"]["dice"]["mean"] == pytest.approx(0.2)
    small = table["arms"]["copy-paste"]["2-5"]
    assert small["dice"]["mean"] == pytest.approx(0.8) and small["difference"]["mean"] == pytest.approx(0.3)
    assert table["arms"]["copy-paste"][">20"]["difference"]["mean"] == pytest.approx(0.0)
    assert table["arms"]["real"]["5-10"]["dice"]["mean"] is None
