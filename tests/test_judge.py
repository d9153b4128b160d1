"""The polyp judge: it learns a generated-polyp task, exports parity-checked, runs torch-free, and its verdicts
flag variants whose region holds no polyp-like change (constructed cases); the report's detectability and
``--features judge``; train-judge's kill + resume."""

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
from engine.errors import BundleError, ExportError
from engine.judge import scores
from cli_helpers import run_main
from judge_helpers import (TINY_MIN_VAL_DICE, TINY_SIZE, TINY_STEPS, clean_frame, fake_output, polyp_frame,
                           train_tiny_judge)


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    return train_tiny_judge(tmp_path_factory.mktemp("judge"))


def test_the_judge_learns_generated_polyps(tiny_judge):
    bundle, outcome = tiny_judge
    training = outcome["training"]
    assert training["steps"] == TINY_STEPS
    # held out by file-name hash, listed in bundle.json
    split = training["split"]
    assert split["val_frames"] >= 1 and split["train_frames"] + split["val_frames"] == 40
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["kind"] == "segmenter" and manifest["training"]["split"]["val_names"] == split["val_names"]
    # the threshold this test states: Dice on its own validation frames (at their own resolution)
    assert training["validation"]["dice"] > TINY_MIN_VAL_DICE, training["validation"]
    assert training["best_validation_at_training_size"]["val_dice"] > TINY_MIN_VAL_DICE


def test_the_exported_judge_runs_torch_free_and_sees_polyps(tiny_judge):
    bundle, _ = tiny_judge
    code = (
        "import sys, numpy as np\n"
        "sys.path.insert(0, 'tests')\n"
        "from judge_helpers import polyp_frame, clean_frame\n"
        "from engine.judge.model import Judge\n"
        f"judge = Judge.from_bundle({str(bundle)!r}, provider='cpu')\n"
        "hits, frees = [], []\n"
        "for seed in range(900, 906):\n"
        "    frame, mask = polyp_frame(seed)\n"
        "    view = judge.look(frame)\n"
        "    assert view.probability.shape == mask.shape\n"
        "    hits.append(judge.verdict(frame, mask, 'add').found)\n"
        "    frees.append(judge.look(clean_frame(seed)).score)\n"
        "print('HITS', sum(hits), 'FREE', max(frees))\n"
        "print('HEAVY', sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "HEAVY []" in completed.stdout
    hits = int(completed.stdout.split("HITS ")[1].split()[0])
    assert hits >= 4, completed.stdout  # unseen generated polyps found at their place


def test_parity_beyond_tolerance_refuses_the_bundle(tmp_path):
    from engine.models.segmenter import JudgeNet
    from engine.export.segmenter_export import export_segmenter_bundle

    with pytest.raises(ExportError, match="differs from torch"):
        export_segmenter_bundle(JudgeNet((4, 8)), tmp_path / "judge", 32, tolerance=(0.0, 0.0), log=lambda t: None)
    assert not (tmp_path / "judge").exists()
    export_segmenter_bundle(JudgeNet((4, 8)), tmp_path / "judge", 32, log=lambda t: None)
    from engine.judge.model import Judge

    judge = Judge.from_bundle(tmp_path / "judge", provider="cpu")
    assert judge.size == 32 and judge.dim == 8
    with open(tmp_path / "judge" / "model.onnx", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        Judge.from_bundle(tmp_path / "judge")


def test_a_non_segmenter_bundle_is_refused_as_judge():
    from engine.judge.model import Judge

    with pytest.raises(BundleError, match="not a judge"):
        Judge.from_bundle(REPO_ROOT / "exported_models" / "demo-dinov2")


# ------------------------------------------------------------------------------------------ verdict rules
def test_region_verdicts_on_constructed_probability_maps():
    region = np.zeros((100, 100), bool)
    region[20:60, 20:60] = True
    polyp = np.zeros((100, 100), np.float32)
    polyp[20:60, 20:60] = 0.9
    add = scores.judge_region(polyp, region, "add")
    assert add.found and add.iou == pytest.approx(1.0) and add.score == pytest.approx(0.9)
    half = np.zeros((100, 100), np.float32)
    half[20:60, 20:40] = 0.9  # half of the region
    verdict = scores.judge_region(half, region, "add")
    assert verdict.iou == pytest.approx(0.5) and verdict.found and verdict.score == pytest.approx(0.45)
    nothing = np.full((100, 100), 0.05, np.float32)
    elsewhere = nothing.copy()
    elsewhere[70:95, 70:95] = 0.95  # a polyp elsewhere does not count for the region
    for p in (nothing, elsewhere):
        v = scores.judge_region(p, region, "add")
        assert not v.found and v.iou == 0.0 and v.score < 0.1 and not v.agrees(0.5)
    # remove: nothing left → agrees; the polyp still there → flagged
    assert scores.judge_region(nothing, region, "remove").agrees(0.5)
    still = scores.judge_region(polyp, region, "remove")
    assert still.found and still.score == pytest.approx(0.1, abs=1e-6) and not still.agrees(0.5)
    # a single hot pixel is not a polyp-sized blob
    speck = nothing.copy()
    speck[40, 40] = 1.0
    assert scores.judge_region(speck, region, "remove").agrees(0.5)
    assert scores.dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0 and scores.iou(np.ones((2, 2)), np.zeros((2, 2))) == 0.0


def test_detectability_flags_a_region_without_a_polyp_and_passes_one_with(tiny_judge, tmp_path):
    from engine.judge.detectability import compute_detectability
    from engine.judge.model import Judge
    from engine.metrics.features import list_images

    bundle, _ = tiny_judge
    judge = Judge.from_bundle(bundle, provider="cpu")
    variants = []
    for seed in (910, 911, 912):
        frame, mask = polyp_frame(seed)
        blank = clean_frame(seed)
        variants += [
            {"name": f"good-add-{seed}", "image": frame, "region": mask, "mode": "add"},  # a polyp where it claims
            {"name": f"bad-add-{seed}", "image": blank, "region": mask, "mode": "add"},  # nothing changed there
            {"name": f"good-remove-{seed}", "image": blank, "region": mask, "mode": "remove"},  # polyp gone
            {"name": f"bad-remove-{seed}", "image": frame, "region": mask, "mode": "remove"},  # polyp still there
        ]
    output = fake_output(tmp_path / "out", variants)
    det = compute_detectability(list_images(output), judge)
    by_name = {row["synthetic"].split("/")[-1][:-4]: row for row in det["per_image"]}
    for name, row in by_name.items():
        passes = row["verdict"]["score"] >= scores.DEFAULT_MIN_SCORE
        assert passes == name.startswith("good"), (name, row["verdict"])
    modes = {g["value"]: g for g in det["groups"] if g["by"] == "mode"}
    assert modes["add"]["count"] == 6 and modes["add"]["found_rate"] == pytest.approx(0.5)
    assert modes["remove"]["found_rate"] == pytest.approx(0.5)  # the bad removals: polyp still found
    assert det["notes"] and "job.json" in det["notes"][0]  # no source frames for this constructed output


def test_report_gains_detectability_and_judge_features(tiny_judge, tmp_path, capsys):
    bundle, _ = tiny_judge
    frames = []
    for seed in range(920, 926):
        frame, mask = polyp_frame(seed)
        frames.append({"name": f"v{seed}", "image": frame, "region": mask, "mode": "add", "mask_source": "user"})
    output = fake_output(tmp_path / "synthetic", frames)
    real = tmp_path / "real"
    from engine.fileio import save_png_atomic

    for seed in range(930, 936):
        save_png_atomic(real / f"r{seed}.png", polyp_frame(seed)[0])
    code = app.main(["report", "--real", str(real), "--synthetic", str(output), "--out", str(tmp_path / "rep"),
                     "--features", str(bundle), "--judge", str(bundle), "--quiet"])
    assert code in (0, 1)
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["features"]["kind"] == "segmenter" and data["features"]["dim"] == 64
    det = data["detectability"]
    assert det["overall"]["count"] == 6 and det["overall"]["found_rate"] >= 0.5
    assert {g["by"] for g in det["groups"]} == {"mask_source", "mode", "bundle"}
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Detectability" in html
    assert "judge" in capsys.readouterr().out


def test_train_judge_resumes_exactly_after_a_kill(tmp_path):
    from engine.samples import generate_sample_set

    generate_sample_set(tmp_path / "frames", count=12, seed=5, width=96, height=80, with_polyps_every=1)
    common = ["train-judge", "--input", str(tmp_path / "frames"), "--steps", "60", "--size", "32", "--widths",
              "4,8,16", "--checkpoint-every", "10", "--validate-every", "20", "--threads", "1", "--quiet"]
    straight = run_main(common + ["--to", str(tmp_path / "a"), "--run-dir", str(tmp_path / "run-a")])
    assert straight.returncode == 0, straight.stderr[-2000:]
    run_b = tmp_path / "run-b"
    process = subprocess.Popen([sys.executable, "main.py", *common, "--to", str(tmp_path / "b"), "--run-dir", str(run_b)],
                               cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run_b / "checkpoints" / "step-00000020").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "b" / "bundle.json").exists()
    resumed = run_main(common + ["--to", str(tmp_path / "b"), "--run-dir", str(run_b), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    from safetensors.numpy import load_file

    a = load_file(str(tmp_path / "run-a" / "checkpoints" / "step-00000060" / "tensors.safetensors"))
    b = load_file(str(run_b / "checkpoints" / "step-00000060" / "tensors.safetensors"))
    weights = [k for k in a if k.startswith("model.")]
    assert weights and all(np.array_equal(a[k], b[k]) for k in weights)
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()


def test_detectability_of_a_real_job_has_before_and_ceiling(tiny_judge, tmp_path):
    """The demo bundle paints noise over real (generated) polyps: the judge finds the polyps in the source
    frames (the ceiling, and "before" at the same region) far more often than in the variants."""
    from engine.judge.detectability import compute_detectability
    from engine.judge.model import Judge
    from engine.jobs import build_spec, run_job
    from engine.metrics.features import list_images
    from engine.samples import generate_sample_set

    generate_sample_set(tmp_path / "frames", count=4, seed=21, width=128, height=96, with_polyps_every=1)
    summary = run_job(build_spec({"input": tmp_path / "frames", "output": tmp_path / "out", "steps": 2,
                                  "threads": 1, "variants": 2, "mask_source": "user"}))  # over the real polyps
    assert summary.ok == 8
    det = compute_detectability(list_images(tmp_path / "out"), Judge.from_bundle(tiny_judge[0], provider="cpu"))
    ceiling, overall = det["ceiling"], det["overall"]
    assert not det["notes"] and ceiling["source_frames_with_polyp"] == 4
    assert ceiling["found_rate"] >= 0.75 and overall["before_found_rate"] >= 0.75
    assert overall["count"] == 8 and overall["found_rate"] < ceiling["found_rate"]
    sizes = det["by_region_size"]
    assert sum(b["variants"] for b in sizes) == 8 and sum(b["real_polyps"] for b in sizes) == 4
    assert all(0 < row["region_area"] < 1 for row in det["per_image"])
    assert all(0 < row["area"] < 1 for row in ceiling["per_frame"])


def test_detectability_of_a_transplant_job_judges_the_moved_polyp(tiny_judge, tmp_path):
    """A transplant output (copy-paste, no model) in the report: each variant is judged at its moved polyp's new
    place, as an added polyp — `report` on such an output failed with "mode 'transplant' is not add or remove"."""
    from engine.judge.detectability import compute_detectability, variant_region
    from engine.judge.model import Judge
    from engine.jobs import build_spec, run_job
    from engine.masks.instances import Instance
    from engine.metrics.features import list_images
    from engine.samples import generate_sample_set

    generate_sample_set(tmp_path / "frames", count=4, seed=21, width=160, height=128, with_polyps_every=1)
    summary = run_job(build_spec({"input": tmp_path / "frames", "output": tmp_path / "out", "mode": "transplant",
                                  "harmonize": "none", "variants": 1, "threads": 1}))
    assert summary.ok >= 2
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    done = [r for r in records if r["status"] == "ok"]
    moved = [Instance.from_json(i) for i in done[0]["instances"] if i["origin"] == "transplant"]
    region = variant_region(tmp_path / "out", done[0])
    assert moved and region is not None
    assert np.array_equal(region, moved[0].raster(done[0]["height"], done[0]["width"]))
    det = compute_detectability(list_images(tmp_path / "out"), Judge.from_bundle(tiny_judge[0], provider="cpu"))
    assert det["overall"]["count"] == summary.ok
    assert sum(b["variants"] for b in det["by_region_size"]) == summary.ok  # counted beside real polyps by size


def test_detectability_by_region_size_is_a_hand_count():
    from engine.judge.detectability import by_region_size

    def variant(area, found, mode="add"):
        return {"mode": mode, "region_area": area, "verdict": {"found": found}}

    rows = [variant(0.01, False), variant(0.015, True), variant(0.03, True), variant(0.3, False),
            variant(0.01, True, mode="remove"), {"mode": "add", "verdict": None}]
    real = [{"area": 0.012, "found": False}, {"area": 0.04, "found": True}, {"area": 0.045, "found": False},
            {"area": 0.5, "found": True}]
    bins = {(b["area_from"], b["area_to"]): b for b in by_region_size(rows, real)}
    small, mid, large = bins[(0.0, 0.02)], bins[(0.02, 0.05)], bins[(0.2, 1.0)]
    assert (small["variants"], small["found_rate"], small["real_polyps"], small["real_found_rate"]) == (2, 0.5, 1, 0.0)
    assert (mid["variants"], mid["found_rate"], mid["real_polyps"], mid["real_found_rate"]) == (1, 1.0, 2, 0.5)
    assert (large["variants"], large["found_rate"], large["real_found_rate"]) == (1, 0.0, 1.0)
    assert bins[(0.05, 0.1)]["found_rate"] is None and bins[(0.05, 0.1)]["variants"] == 0


def test_max_minutes_stops_and_exports_the_best_so_far(tmp_path):
    from engine.evaluation.train_judge import JudgeTraining, run_train_judge
    from engine.samples import generate_sample_set

    generate_sample_set(tmp_path / "frames", count=10, seed=8, width=96, height=80, with_polyps_every=1)
    outcome = run_train_judge(JudgeTraining(
        input=tmp_path / "frames", to=tmp_path / "judge", run_dir=tmp_path / "run", steps=100_000, size=32,
        widths=(4, 8, 16), validate_every=5, patience=None, threads=1, max_minutes=0.05, progress=False),
        log=lambda text: None)
    assert 0 < outcome["training"]["steps"] < 100_000 and outcome["training"]["max_minutes"] == 0.05
    assert (tmp_path / "judge" / "bundle.json").is_file() and (tmp_path / "judge" / "MODEL_CARD.md").is_file()


# The judge card as the writer before the one model-card writer (engine.training.model_card) wrote it for this
# manifest and these figures: the merge must keep every word.
JUDGE_CARD = "\n".join([
    "# Model card: tiny-judge (polyp judge)",
    "",
    "**An evaluation tool, not a diagnostic device.** It measures whether synthetic frames look like "
    "polyps to a segmenter trained on real ones (`main.py report` detectability, `--judge` in the "
    "batch job, `main.py evaluate`). It must never be used to find, rule out or show polyps in "
    "patients.",
    "",
    "## What it is",
    "- compact U-Net, widths [4, 8], 0.12 M parameters, trained from scratch (no pretrained weights)",
    "- input: the whole frame resized to 64×64 (aspect squeezed), ImageNet normalisation; output: "
    "polyp probability per pixel (mask = p > 0.5) and a 32-d encoder embedding; patch features (4×4 "
    "patches × 16-d) for the retrieval proposer",
    "- bundle id abc123",
    "",
    "## Data and terms",
    "- trained on /data/kvasir-seg: 9 frames, validated on 1",
    "- split: by hash; the validation frames are listed in bundle.json (training.split.val_names)",
    "- terms: Kvasir-SEG (Jha et al., MMM 2020; Vestre Viken Health Trust, Norway): free for "
    "academic and research use; commercial use needs the dataset authors' prior permission; cite the "
    "paper. A model trained on it is for research use under the same terms.",
    "",
    "## Training",
    "- 40 optimiser steps of 8 frames at 64², 1.5 minutes of training (wall clock) on a CPU with 2 "
    "thread(s) (shared with other work), lr 0.002 cosine; weights kept: best validation Dice (step "
    "30)",
    "- shared CPU",
    "- augmentation: random crops (60–100 % of the area; 15 % chosen to miss the polyp), flips, 90° "
    "rotations, brightness / contrast / colour gain; loss BCE + soft Dice; early stopping on "
    "validation Dice",
    "",
    "## Figures (the exported ONNX model, each frame at its own resolution)",
    "",
    "| frames | n | with polyp | Dice | IoU | AP50 | AP@[.5:.95] | false positives (score / any) |",
    "|---|---|---|---|---|---|---|---|",
    "| own validation split | 1 | 1 | 0.612 | 0.500 | – | 0.250 | – |",
    "| normal | 3 | 0 | 1.000 | 1.000 | – | – | 0.333 / 0.667 |",
    "",
    "- own validation split: held out by the split rule above, never trained on",
    "- normal: polyp-free",
    "- Dice and IoU: per frame, averaged (1 for a polyp-free frame where nothing is predicted). AP: "
    "COCO bbox AP of the predicted components' boxes (scored by mean probability) against the truth "
    "components' boxes. False positives on polyp-free frames: share of frames whose polyp score "
    "(peak of the smoothed probability) exceeds the threshold / share with any predicted component.",
    "",
    "## Limits",
    "- Trained on one public dataset (one hospital, one kind of endoscope); Kvasir-SEG has "
    "near-duplicate frames of the same lesion, so its own validation split is optimistic. Frames "
    "from elsewhere may score worse.",
    "- Trained on polyp frames only (polyp-free crops of them are its only negatives): expect false "
    "positives on polyp-free frames, above all with stool, bubbles or instrument overlays.",
    "- A small network at low resolution: small and flat polyps are missed more often.",
    "",
])


def test_the_judge_card_keeps_its_text(tmp_path):
    from types import SimpleNamespace

    from engine.training.model_card import judge_card

    manifest = {"name": "tiny-judge", "architecture": {"name": "compact U-Net", "widths": [4, 8], "parameters": 123456},
                "patch_grid": [4, 4], "patch_dim": 16,
                "training": {"data": "/data/kvasir-seg", "steps": 40, "batch_size": 8, "size": 64, "train_minutes": 1.5,
                             "threads": 2, "lr": 0.002, "weights": "best validation Dice",
                             "best_validation_at_training_size": {"val_dice": 0.5, "step": 30},
                             "split": {"rule": "by hash", "train_frames": 9, "val_frames": 1, "val_names": ["a.png"]}}}
    judge = SimpleNamespace(bundle=SimpleNamespace(manifest=manifest), size=64, threshold=0.5, dim=32,
                            bundle_id="abc123")
    figures = {"own validation split": dict(frames=1, frames_with_polyp=1, dice=0.61234, iou=0.5, ap50=None, ap=0.25),
               "normal": dict(frames=3, frames_with_polyp=0, dice=1.0, iou=1.0, ap50=None, ap=None,
                              false_positive_rate_score=0.3333, false_positive_rate_any_component=0.6667)}
    notes = [("own validation split", "held out by the split rule above, never trained on"), ("normal", "polyp-free")]
    card = judge_card(tmp_path, judge, figures, notes, training_notes=["shared CPU"])
    assert card == tmp_path / "MODEL_CARD.md" and card.read_text(encoding="utf-8") == JUDGE_CARD
