"""Batch job --judge: a variant the judge disagrees with is rejected (status rejected, reason judge, its score
in the manifest), kept out of every annotation file exactly like a gallery rejection, regenerated with the next
seeds up to --max-attempts, and a resumed job is byte-identical to an uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest

import main
from engine.errors import InputError
from engine.judge.rejection import attempt_seed
from engine.jobs.review import load_records, set_review
from engine.jobs.runner import variant_seed
from engine.jobs.spec import shipped_bundles_folder
from engine.samples import generate_sample_set
from judge_helpers import random_judge


DEMO = shipped_bundles_folder() / "demo-sd-inpaint"


@pytest.fixture(scope="module")
def judge_bundle(tmp_path_factory):
    return random_judge(tmp_path_factory.mktemp("judge") / "random-judge")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    generate_sample_set(root, count=4, seed=7, width=160, height=128, with_polyps_every=1)
    return root


def _job(frames, output, judge, *extra):
    # The demo bundle paints noise into the region: the random judge's scores spread (the gate is under test here).
    return ["--batch", "--quiet", "--input", str(frames), "--output", str(output), "--variants", "2", "--steps", "2",
            "--threads", "1", "--model", str(DEMO), "--judge", str(judge), *extra]


def _coco_files(output):
    return {i["file_name"] for i in json.loads((output / "annotations" / "instances.json").read_text())["images"]}


def test_every_variant_carries_its_judge_score(frames, judge_bundle, tmp_path):
    output = tmp_path / "out"
    assert main.main(_job(frames, output, judge_bundle, "--min-judge-score", "0")) == 0
    records = load_records(output)
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    for record in records:
        judge = record["judge"]
        assert 0.0 <= judge["score"] <= 1.0 and judge["min_score"] == 0.0 and len(judge["attempts"]) == 1
        assert record["seed"] == variant_seed(0, record["source_frame"], record["variant"])
    assert len({r["judge"]["score"] for r in records}) > 1


def test_rejected_variants_leave_every_annotation_file_and_retry_with_the_next_seeds(frames, judge_bundle, tmp_path):
    output = tmp_path / "out"
    assert main.main(_job(frames, output, judge_bundle, "--min-judge-score", "1", "--max-attempts", "3")) == 0
    records = load_records(output)
    assert all(r["status"] == "rejected" and r["reason"] == "judge" for r in records)
    for record in records:
        seeds = [a["seed"] for a in record["judge"]["attempts"]]
        base = variant_seed(0, record["source_frame"], record["variant"])
        assert seeds == [attempt_seed(base, k) for k in range(3)] and len(set(seeds)) == 3
        assert record["seed"] == seeds[-1]
        assert not (output / record["image"]).exists() and (output / "rejected" / record["image"]).is_file()
        assert (output / "rejected" / record["mask"]).is_file()
    assert _coco_files(output) == set()
    assert not list((output / "labels").rglob("*.txt")) and not list((output / "yolo-seg").rglob("*.png"))
    # as in the gallery: a curator can still accept one, and it comes back everywhere
    chosen = records[0]
    set_review(output, [chosen["key"]], accepted=True)
    assert _coco_files(output) == {chosen["image"]} and (output / chosen["image"]).is_file()
    assert len(list((output / "labels").rglob("*.txt"))) == 1


def test_a_mixed_verdict_job_resumes_byte_identical(frames, judge_bundle, tmp_path):
    probe = tmp_path / "probe"
    assert main.main(_job(frames, probe, judge_bundle, "--min-judge-score", "0")) == 0
    scores = sorted(r["judge"]["score"] for r in load_records(probe))
    assert scores[3] < scores[4]
    threshold = f"{(scores[3] + scores[4]) / 2:.7f}"  # about half pass at the first attempt
    args = ["--min-judge-score", threshold, "--max-attempts", "2"]
    straight = tmp_path / "straight"
    assert main.main(_job(frames, straight, judge_bundle, *args)) == 0
    records = load_records(straight)
    statuses = [r["status"] for r in records]
    assert "ok" in statuses and any(len(r["judge"]["attempts"]) == 2 for r in records)
    for record in records:
        assert (record["status"] == "ok") == (record["judge"]["score"] >= float(threshold))
    assert _coco_files(straight) == {r["image"] for r in records if r["status"] == "ok"}

    from engine.jobs import build_spec, run_job

    interrupted = tmp_path / "interrupted"
    values = {"input": frames, "output": interrupted, "variants": 2, "steps": 2, "threads": 1, "model": DEMO,
              "judge": judge_bundle,
              "min_judge_score": float(threshold), "max_attempts": 2}
    seen = []
    summary = run_job(build_spec(values), on_event=lambda e: seen.append(e.kind),
                      cancel=lambda: seen.count("variant") >= 3)
    assert summary.status == "cancelled"
    assert main.main(_job(frames, interrupted, judge_bundle, *args)) == 0
    def without_timing(output):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in load_records(output)]

    assert without_timing(straight) == without_timing(interrupted)  # the manifest but for the seconds taken
    for name in ("annotations/instances.json", "labels/train", "yolo-seg/labels/train"):
        a, b = straight / name, interrupted / name
        if a.is_dir():
            assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
            for p in a.iterdir():
                assert p.read_bytes() == (b / p.name).read_bytes()
        else:
            assert a.read_bytes() == b.read_bytes(), name
    for record in records:
        place = straight if record["status"] == "ok" else straight / "rejected"
        other = interrupted if record["status"] == "ok" else interrupted / "rejected"
        assert (place / record["image"]).read_bytes() == (other / record["image"]).read_bytes()
    # other judge settings in the same output folder are refused
    assert main.main(_job(frames, interrupted, judge_bundle, "--min-judge-score", "0.1")) == 2


def test_judge_options_are_checked(frames, tmp_path, capsys):
    from engine.jobs import build_spec

    with pytest.raises(InputError, match="give --judge"):
        build_spec({"input": frames, "output": tmp_path / "o", "max_attempts": 2})
    with pytest.raises(InputError, match="between 0 and 1"):
        build_spec({"input": frames, "output": tmp_path / "o", "judge": tmp_path, "min_judge_score": 1.5})
    demo = main.REPO_ROOT / "exported_models" / "demo-dinov2"
    assert main.main(["--batch", "--quiet", "--input", str(frames), "--output", str(tmp_path / "o"),
                      "--judge", str(demo)]) == 2
    assert "not a judge" in capsys.readouterr().err
    assert np.isfinite(attempt_seed(5, 0)) and attempt_seed(5, 0) == 5 and attempt_seed(5, 1) != 5
