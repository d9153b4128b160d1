"""The judge a model recommends (bundle.json "judge", engine.judge.model_gate): main.py --batch and the app use it
by default when no judge is named, only for the modes it covers; --no-judge (job file: model_judge = false) keeps
every variant; the engine's own JobSpec default stays off; a malformed or missing recommendation is refused in one
line naming the bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import main
from engine.errors import BundleError, InputError
from engine.jobs import build_spec
from engine.jobs.review import load_records
from engine.jobs.spec import DEFAULT_MODEL, shipped_bundles_folder
from engine.judge.model_gate import model_gate_of, recommended_gate, with_model_gate
from engine.samples import generate_sample_set
from judge_helpers import random_judge

DEMO = shipped_bundles_folder() / "demo-sd-inpaint"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    generate_sample_set(root, count=3, seed=5, width=160, height=128, with_polyps_every=1)
    return root


@pytest.fixture(scope="module")
def gated_model(tmp_path_factory):
    """The demo SD bundle (it paints noise, so a random judge's scores spread) recommending a random judge."""
    root = tmp_path_factory.mktemp("gated")
    judge = random_judge(root / "random-judge")
    model = root / "gated-model"
    shutil.copytree(DEMO, model)
    manifest = json.loads((model / "bundle.json").read_text())
    manifest["judge"] = {"bundle": str(judge), "max_attempts": 2, "modes": ["add"]}
    (model / "bundle.json").write_text(json.dumps(manifest, indent=2))
    return model, judge


def _batch(frames, output, model, *extra):
    return main.main(["--batch", "--quiet", "--input", str(frames), "--output", str(output), "--variants", "2",
                      "--steps", "2", "--threads", "1", "--model", str(model), "--mask-source", "random", *extra])


def test_the_default_model_recommends_the_shipped_polyp_judge_for_add():
    gate = model_gate_of(DEFAULT_MODEL)
    assert gate is not None and gate.bundle == "polyp-judge" and gate.max_attempts == 4 and gate.modes == ("add",)
    assert "evaluation.md" in gate.evidence
    spec = build_spec({"input": "in", "output": "out", "mask_source": "random", "model_judge": True})
    gated = with_model_gate(spec)
    assert gated.judge is not None and gated.judge.resolve() == (shipped_bundles_folder() / "polyp-judge").resolve()
    assert gated.max_attempts == 4 and gated.min_judge_score == 0.5
    # removal is not covered, a judge of one's own wins, and the engine's own default asks for nothing
    remove = build_spec({"input": "in", "output": "out", "mode": "remove", "mask_source": "box", "model_judge": True})
    assert with_model_gate(remove).judge is None
    own = build_spec({"input": "in", "output": "out", "judge": "elsewhere", "model_judge": True})
    assert with_model_gate(own).judge == Path("elsewhere") and with_model_gate(own).max_attempts == 1
    assert with_model_gate(build_spec({"input": "in", "output": "out"})).judge is None
    # more attempts than the model recommends are kept; attempts without any judge are refused
    more = build_spec({"input": "in", "output": "out", "model_judge": True, "max_attempts": 6})
    assert with_model_gate(more).max_attempts == 6
    removing = build_spec({"input": "in", "output": "out", "mode": "remove", "mask_source": "box", "model_judge": True,
                           "max_attempts": 3})
    with pytest.raises(InputError, match="recommends no judge for mode remove"):
        with_model_gate(removing)


@pytest.mark.parametrize("entry, message", [
    ("polyp-judge", "must be an object"),
    ({"max_attempts": 2}, "must name a segmenter bundle"),
    ({"bundle": "j", "max_attempts": 0}, "integer ≥ 1"),
    ({"bundle": "j", "max_attempts": True}, "integer ≥ 1"),
    ({"bundle": "j", "modes": []}, "must list job modes"),
])
def test_a_malformed_recommendation_names_the_bundle_file(entry, message, tmp_path):
    with pytest.raises(BundleError, match=message) as caught:
        recommended_gate({"judge": entry}, tmp_path / "bundle.json")
    assert "bundle.json" in str(caught.value)
    assert recommended_gate({}, tmp_path / "bundle.json") is None


def test_batch_uses_the_models_judge_unless_told_not_to(frames, gated_model, tmp_path, capsys):
    model, judge = gated_model
    gated = tmp_path / "gated"
    assert _batch(frames, gated, model) == 0
    records = load_records(gated)
    assert len(records) == 6
    for record in records:
        assert record["judge"]["bundle"] == "random-judge" and record["judge"]["max_attempts"] == 2
        assert 1 <= len(record["judge"]["attempts"]) <= 2
        assert record["status"] in ("ok", "rejected")
    settings = json.loads((gated / "job.json").read_text())["settings"]
    assert Path(settings["judge"]).resolve() == judge.resolve() and settings["max_attempts"] == 2
    assert "recommended judge random-judge" in capsys.readouterr().err
    notes = json.loads((gated / "summary.json").read_text())["notes"]
    (line,) = [note for note in notes if note.startswith("kept by the judge")]
    counts = [part.rsplit(" ", 3)[-3:] for part in line.split(": ", 1)[1].split(", ")]
    assert sum(int(total) for _, _, total in counts) == 6
    assert sum(int(kept) for kept, _, _ in counts) == sum(r["status"] == "ok" for r in records)
    # resumed with the same command: nothing is made again
    assert _batch(frames, gated, model) == 0
    assert load_records(gated) == records

    free = tmp_path / "free"
    assert _batch(frames, free, model, "--no-judge") == 0
    records = load_records(free)
    assert len(records) == 6 and all(r["status"] == "ok" and "judge" not in r for r in records)
    # a job file says the same with model_judge = false
    job_file = tmp_path / "job.toml"
    job_file.write_text("model_judge = false\n")
    from_file = tmp_path / "from-file"
    assert _batch(frames, from_file, model, "--job", str(job_file)) == 0
    assert all("judge" not in r for r in load_records(from_file))


def test_judge_and_no_judge_together_are_refused(frames, gated_model, tmp_path, capsys):
    model, judge = gated_model
    with pytest.raises(SystemExit):
        _batch(frames, tmp_path / "o", model, "--judge", str(judge), "--no-judge")
    assert "not allowed with" in capsys.readouterr().err


def test_a_recommended_judge_that_is_not_installed_stops_the_job_before_it_starts(frames, gated_model, tmp_path,
                                                                                   capsys):
    model, _ = gated_model
    broken = tmp_path / "broken-model"
    shutil.copytree(model, broken)
    manifest = json.loads((broken / "bundle.json").read_text())
    manifest["judge"]["bundle"] = "no-such-judge"
    (broken / "bundle.json").write_text(json.dumps(manifest))
    assert _batch(frames, tmp_path / "o", broken) == 2
    err = capsys.readouterr().err
    assert "no-such-judge" in err and "--no-judge" in err and "broken-model" in err
    assert not (tmp_path / "o" / "manifest.jsonl").exists()
    assert _batch(frames, tmp_path / "o2", broken, "--no-judge") == 0  # and the way out works


def test_a_job_written_without_a_judge_resumes_with_no_judge_and_says_so(frames, gated_model, tmp_path, capsys):
    """A folder an earlier, unchecked run wrote: resuming it with the new default is refused with the way out."""
    model, _ = gated_model
    output = tmp_path / "out"
    assert _batch(frames, output, model, "--no-judge") == 0
    before = (output / "manifest.jsonl").read_bytes()
    capsys.readouterr()
    assert _batch(frames, output, model) == 2
    err = capsys.readouterr().err
    assert "other settings (judge" in err and "--no-judge resumes it as it was" in err
    assert _batch(frames, output, model, "--no-judge") == 0
    assert (output / "manifest.jsonl").read_bytes() == before


def test_the_evaluations_synthetic_arm_stays_unchecked_under_the_apps_default():
    """The app builds its arms on its own settings, which ask for the model's judge: the synthetic arm is still the
    unchecked baseline, and the judge-kept arm names its judge."""
    from desktop.settings import JobSettings
    from engine.jobs.arm_presets import arm_job_values

    base = JobSettings(mask_source="random").spec_values(Path("frames"), None)
    assert base["model_judge"] is True
    assert "model_judge" not in arm_job_values("synthetic", base) and "judge" not in arm_job_values("synthetic", base)
    judged = arm_job_values("synthetic-judged", base)
    assert "model_judge" not in judged and judged["judge"] == "polyp-judge" and judged["max_attempts"] == 4


def test_kept_by_size_counts_judged_variants_per_size_bin():
    from engine.judge.rejection import kept_by_size

    judge = {"score": 0.1}
    records = [{"size_drawn": 0.03, "status": "ok", "judge": judge}, {"size_drawn": 0.04, "status": "rejected",
               "judge": judge}, {"size_drawn": 0.3, "status": "rejected", "judge": judge},
               {"size_drawn": 0.3, "status": "ok"},  # not judged
               {"size_drawn": 0.01, "status": "failed", "judge": judge}, {"status": "ok", "judge": judge}]
    assert kept_by_size(records) == ("kept by the judge, by the polyp size drawn (share of the frame): 2–5 % 1 of 2, "
                                     "> 20 % 0 of 1")
    assert kept_by_size([{"status": "ok"}]) is None
