"""Test frames the generator has seen (engine.bundle.training_frames, engine.evaluation.generator_seen): a model
bundle lists its training frames by sha256; the learning curve reports a generated arm's gain on the test frames its
generator never trained on beside its gain on all; a pool no model painted, or whose model carries no list, is left
alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_helpers import run_main
from conftest import REPO_ROOT
from engine.bundle.format import read_bundle
from engine.bundle.hashing import sha256_of_file
from engine.bundle.training_frames import KEY, training_frames_of, write_training_frames
from engine.errors import BundleError
from engine.evaluation.generator_seen import seen_test_frames, unseen_difference

DEMO_MODEL = REPO_ROOT / "exported_models" / "demo-sd-inpaint"
TINY = ["--seeds", "2", "--max-steps", "30", "--validate-every", "10", "--patience", "3", "--size", "32",
        "--widths", "4,8,16", "--threads", "1", "--quiet"]


def _model_trained_on(folder: Path, frames: list[Path]) -> Path:
    """The demo SD bundle, copied, naming ``frames`` as its training frames (bundle.json is not part of the id)."""
    shutil.copytree(DEMO_MODEL, folder)
    entry = write_training_frames(folder, [(sha256_of_file(f), f"corpus/{f.name}") for f in frames])
    manifest = json.loads((folder / "bundle.json").read_text())
    (folder / "bundle.json").write_text(json.dumps({**manifest, KEY: entry}, indent=2))
    return folder


def test_the_shipped_model_lists_the_968_frames_it_trained_on():
    trained = training_frames_of(read_bundle(REPO_ROOT / "exported_models" / "polypforge-compact"))
    held = set((REPO_ROOT / "training_runs" / "compact-anneal" / "model" / "held_out_frames.txt").read_text().split())
    assert len(trained) == 968 and len(held) == 56
    names = set(trained.names.values())
    assert sum(n.startswith("kvasir-seg/") for n in names) == 944 and sum(n.startswith("normal/") for n in names) == 24
    assert not {Path(n).stem for n in names} & held


def test_a_training_list_that_is_altered_or_malformed_is_refused_naming_the_bundle(tmp_path):
    frames = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, f in enumerate(frames):
        f.write_bytes(bytes([i]) * 10)
    model = _model_trained_on(tmp_path / "model", frames)
    assert training_frames_of(read_bundle(model)).sha256 == {sha256_of_file(f) for f in frames}
    (model / "training_frames.txt").write_text("0" * 64 + "  other\n")
    with pytest.raises(BundleError, match="training_frames.txt.*sha256 mismatch"):
        training_frames_of(read_bundle(model))
    manifest = json.loads((model / "bundle.json").read_text())
    (model / "bundle.json").write_text(json.dumps({**manifest, KEY: {"file": "../elsewhere.txt", "sha256": "x"}}))
    with pytest.raises(BundleError, match="outside the bundle"):
        training_frames_of(read_bundle(model))
    (model / "bundle.json").write_text(json.dumps({**manifest, KEY: "yes"}))
    with pytest.raises(BundleError, match="must name a file"):
        training_frames_of(read_bundle(model))
    assert training_frames_of(read_bundle(DEMO_MODEL)) is None  # no list: nothing known


def _pool(folder: Path, model: Path | None, bundle_id: str, steps: int) -> Path:
    folder.mkdir(parents=True)
    line = {"key": "x.png#0", "status": "ok", "steps": steps, "bundle": "demo-sd-inpaint", "bundle_id": bundle_id,
            "image": "images/train/x.png"}
    (folder / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    if model is not None:
        (folder / "job.json").write_text(json.dumps({"settings": {"model": str(model)}}))
    return folder


def test_which_test_frames_a_pools_generator_has_seen(tmp_path):
    tests = [tmp_path / f"t{i}.png" for i in range(4)]
    for i, f in enumerate(tests):
        f.write_bytes(bytes([i + 10]) * 10)
    names, shas = [f.name for f in tests], [sha256_of_file(f) for f in tests]
    model = _model_trained_on(tmp_path / "model", tests[:2])
    bundle_id = read_bundle(model).bundle_id
    seen = seen_test_frames([_pool(tmp_path / "painted", model, bundle_id, 20)], names, shas)
    assert seen.names == {"t0.png", "t1.png"} and seen.bundles[0].startswith("demo-sd-inpaint (")
    # copy-paste painted nothing: nothing seen; a pool gone, another model with that name, a model without a list:
    # unknown
    assert seen_test_frames([_pool(tmp_path / "pasted", model, bundle_id, 0)], names, shas).names == frozenset()
    assert seen_test_frames([tmp_path / "gone"], names, shas) is None
    assert seen_test_frames([_pool(tmp_path / "other", model, "f" * 64, 20)], names, shas) is None
    plain = read_bundle(DEMO_MODEL).bundle_id
    assert seen_test_frames([_pool(tmp_path / "plain", DEMO_MODEL, plain, 20)], names, shas) is None


def test_the_gain_on_unseen_frames_leaves_the_seen_ones_out():
    def run(dice):
        return {"summary": {}, "frames": [{"frame": f"t{i}.png", "dice": d, "iou": d / 2} for i, d in enumerate(dice)]}

    real = {0: run([0.5, 0.5, 0.5, 0.5]), 1: run([0.4, 0.4, 0.4, 0.4])}
    arm = {0: run([0.9, 0.9, 0.6, 0.5]), 1: run([0.8, 0.8, 0.5, 0.6])}  # big gains on the two frames it has seen
    diff = unseen_difference(real, arm, frozenset({"t0.png", "t1.png"}), ("real", "arm"))
    assert diff["dice"]["differences"] == pytest.approx([0.05, 0.15]) and diff["per_frame_dice"]["frames"] == 2
    assert unseen_difference(real, arm, frozenset({f"t{i}.png" for i in range(4)}), ("real", "arm")) is None


def test_the_curve_reports_the_gain_on_the_test_frames_the_generator_never_trained_on(tmp_path):
    from engine.samples import generate_sample_set

    generate_sample_set(tmp_path / "train", count=30, seed=1, width=96, height=80, with_polyps_every=1)
    generate_sample_set(tmp_path / "test", count=6, seed=2, width=96, height=80, with_polyps_every=1)
    tests = sorted((tmp_path / "test" / "images").iterdir())
    model = _model_trained_on(tmp_path / "model", tests[:2])
    job = tmp_path / "add.toml"
    job.write_text(f'model = "{model}"\nmode = "add"\nmask_source = "random"\nsteps = 2\nformats = ["coco"]\n'
                   'input = "ignored"\noutput = "ignored"\n', encoding="utf-8")
    out = tmp_path / "eval"
    # named "synthetic", as the default preset arm is (also the name of --synthetic FRACTION=DIR's arm)
    data = ["evaluate", "--train", tmp_path / "train", "--test", tmp_path / "test", "--real-fractions", "0.5",
            "--out", out]
    done = run_main([*data, "--arm", f"synthetic={job}", *TINY])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    entry = report["points"][0]["unseen"]["synthetic"]["test"]
    assert entry["seen"] == 2 and entry["unseen"] == 4 and entry["generators"][0].startswith("demo-sd-inpaint")
    assert entry["difference"]["per_frame_dice"]["frames"] == 4 and len(entry["difference"]["dice"]["differences"]) == 2
    assert any(n.startswith("synthetic: the model that painted its frames") and "trained on 2 of the 6 test test "
               "frames" in n for n in report["notes"])
    assert "On the test frames the generator never trained on" in (out / "report.html").read_text()
    # a report of what is finished, written again with another arm named (not run yet): no error
    again = run_main([*data, "--arm", f"synthetic={job}", "--arm", f"other={job}", "--report-only", *TINY])
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["points"][0]["unseen"]["synthetic"]["test"]["seen"] == 2


def test_the_single_comparison_warns_and_reports_the_unseen_frames(tmp_path):
    """`evaluate --synthetic DIR` (real vs real + that folder on all training frames): a generator that trained on
    some test frames is named in a warning, and the difference on the other test frames is in the report."""
    from judge_helpers import fake_output, polyp_frame, real_folder

    train, test = real_folder(tmp_path / "train", range(100, 112)), real_folder(tmp_path / "test", range(200, 204))
    tests = sorted((test / "images").iterdir())
    model = _model_trained_on(tmp_path / "model", tests[:1])
    bundle_id = read_bundle(model).bundle_id
    synthetic = fake_output(tmp_path / "synthetic", [
        {"name": f"s{s}", "image": polyp_frame(s, 96, 80)[0], "region": polyp_frame(s, 96, 80)[1], "mode": "add",
         "source_sha256": f"{s:064d}"} for s in range(300, 306)])
    lines = [json.loads(line) for line in (synthetic / "manifest.jsonl").read_text().splitlines()]
    (synthetic / "manifest.jsonl").write_text("".join(
        json.dumps({**r, "steps": 20, "bundle": "demo-sd-inpaint", "bundle_id": bundle_id}) + "\n" for r in lines))
    (synthetic / "job.json").write_text(json.dumps({"settings": {"model": str(model)}}))
    done = run_main(["evaluate", "--seeds", "2", "--steps", "10", "--validate-every", "5", "--size", "32",
                     "--widths", "4,8,16", "--threads", "1", "--quiet", "--train", train, "--synthetic", synthetic,
                     "--test", test, "--out", tmp_path / "eval"])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["generator_seen"]["seen"] == 1 and report["generator_seen"]["unseen"] == 3
    assert any("trained on 1 of the 4 test frames" in w for w in report["warnings"])
    assert report["difference_unseen"]["per_frame_dice"]["frames"] == 3
    assert len(report["difference_unseen"]["dice"]["differences"]) == 2
    assert "test frames the generator never trained on" in (tmp_path / "eval" / "report.html").read_text()


def test_where_an_arms_pools_are_found():
    from types import SimpleNamespace

    from engine.evaluation.curve_report import pool_folders

    settings = SimpleNamespace(arms={"synthetic": "job.toml", "copy-paste": "cp.toml"}, synthetic={0.25: "given"},
                               out="OUT", components=lambda arm: {"both": ("synthetic", "copy-paste")}.get(arm, (arm,)))
    at_01, at_025 = SimpleNamespace(fraction=0.1, label="0.1"), SimpleNamespace(fraction=0.25, label="0.25")
    assert pool_folders(settings, at_01, "synthetic") == [Path("OUT/synthetic/0.1/synthetic")]  # a job arm so named
    assert pool_folders(settings, at_01, "both") == [Path("OUT/synthetic/0.1/synthetic"),
                                                     Path("OUT/synthetic/0.1/copy-paste")]
    bare = SimpleNamespace(**{**settings.__dict__, "arms": {}})
    assert pool_folders(bare, at_025, "synthetic") == [Path("given")]  # --synthetic 0.25=given
    assert pool_folders(bare, at_01, "synthetic") is None and pool_folders(settings, at_01, "gone") is None


def test_a_warm_started_model_lists_the_frames_of_the_model_it_started_from_too(tmp_path):
    from engine.training.model_card import _earlier_training_frames

    parent = tmp_path / "parent"
    parent.mkdir()
    write_training_frames(parent, [("a" * 64, "corpus/a.png"), ("b" * 64, "corpus/b.png")])
    assert _earlier_training_frames(str(parent)) == {"a" * 64: "corpus/a.png", "b" * 64: "corpus/b.png"}
    (parent / "training_frames.txt").write_text("not a list\n")
    assert _earlier_training_frames(str(parent)) == {} and _earlier_training_frames(None) == {}
    assert _earlier_training_frames(str(tmp_path / "gone")) == {}
