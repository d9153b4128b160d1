"""Guidance in a limited interval (engine.pipelines.guidance, `--guidance-interval A-B`): the classifier-free pair
on the A to B share of the steps only, the conditional prediction alone on the others — on the shipped default
model, through the pipeline and the batch job."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import InputError
from pipeline_helpers import prepared_random_frame, record_unet_feeds


def test_a_rule_holds_on_its_share_of_the_steps_rounded_up_and_hands_over_outside():
    from engine.pipelines.guidance import Guide, classifier_free, parse_guidance_interval, unguided

    pair = classifier_free(3.0)
    assert [pair.at(i, 5).copies for i in range(5)] == [2] * 5  # no interval: every step
    middle = Guide(2, pair.combine, 0.3, 0.7, unguided())
    assert [middle.at(i, 10).copies for i in range(10)] == [1, 1, 1, 2, 2, 2, 2, 1, 1, 1]
    assert [middle.at(i, 4).copies for i in range(4)] == [1, 1, 2, 1]  # 0.3 · 4 → from step 2, 0.7 · 4 → to 3
    three = Guide(3, lambda p: p[:1], 0.0, 0.5, pair)
    assert [three.at(i, 4).copies for i in range(4)] == [3, 3, 2, 2]
    u, c = np.zeros((1, 2)), np.ones((1, 2))
    assert np.allclose(pair.combine(np.concatenate([u, c])), 3.0)  # u + G·(c − u)
    assert unguided().combine(c) is c
    assert parse_guidance_interval("0.3-1") == (0.3, 1.0) and parse_guidance_interval((0.2, 0.8)) == (0.2, 0.8)
    assert parse_guidance_interval("0-1") is None and parse_guidance_interval(None) is None  # every step
    for bad, says in (("0.8-0.3", "needs 0 <= A < B <= 1"), ("0.3", "give two shares"), ("a-b", "give two shares"),
                      ("0.2-1.5", "needs 0 <= A < B <= 1")):
        with pytest.raises(InputError, match=f"guidance interval '{bad}': {says}"):
            parse_guidance_interval(bad)


def test_the_default_model_guides_only_inside_the_interval(monkeypatch):
    """Steps outside the interval feed the U-Net the conditional label alone, one row a variant; inside, the pair
    [unconditional, Polyp]; "0-1" is exactly the run without an interval; the interval is recorded when it ran."""
    from engine.jobs.spec import DEFAULT_MODEL
    from engine.pipelines.compact import CompactInpaintPipeline

    pipe = CompactInpaintPipeline.from_bundle(DEFAULT_MODEL, provider="cpu", threads=1)
    prepared, noise = prepared_random_frame(pipe, seed=2, size=(90, 120), box=(30, 60, 40, 80))
    fed = record_unet_feeds(monkeypatch, pipe, lambda feeds: feeds["class_labels"].tolist())

    def paint(interval=None, guidance=3.0, count=1):
        fed.clear()
        return pipe.generate_variants(prepared, list(range(count)), latents=[noise] * count, steps=4,
                                      guidance_scale=guidance, guidance_interval=interval, batch_size=count)

    polyp = pipe.class_of("Polyp")
    (whole,) = paint()
    assert fed == [[0, polyp]] * 4 and "guidance_interval" not in whole.settings
    (late,) = paint("0.5-1")
    assert fed == [[polyp], [polyp], [0, polyp], [0, polyp]]  # the noisiest half unguided, then the pair
    assert late.settings["guidance_interval"] == [0.5, 1.0]
    assert np.abs(late.raw - whole.raw).max() > 1e-3
    (every,) = paint("0-1")
    assert fed == [[0, polyp]] * 4 and np.array_equal(every.raw, whole.raw)
    assert "guidance_interval" not in every.settings
    (unguided_run,) = paint("0.5-1", guidance=1.0)  # nothing to guide: one prediction a step, nothing recorded
    assert fed == [[polyp]] * 4 and "guidance_interval" not in unguided_run.settings
    with pytest.raises(InputError, match="guidance interval 0.9-0.95 covers none of the 4 sampling steps"):
        paint("0.9-0.95")  # ceil(3.6) = ceil(3.8) = 4: no step; it would run unguided, recorded as guided
    assert fed == []
    assert paint("0.9-0.95", guidance=1.0)  # unguided anyway: nothing to refuse
    with pytest.raises(InputError, match="covers none of the 2 sampling steps"):  # from the frame: 2 of 4 run
        pipe.generate_variants(prepared, [0], latents=[noise], steps=4, guidance_scale=3.0, strength=0.5,
                               guidance_interval="0.6-0.9")
    two = paint("0.5-1", count=2)  # a batch: each block holds both variants, and a variant is the variant alone
    assert fed == [[polyp] * 2] * 2 + [[0, 0, polyp, polyp]] * 2
    assert np.abs(two[0].raw - late.raw).max() < 1e-4
    outside = ~prepared.mask
    assert np.array_equal(late.image[outside], prepared.frame[outside])  # the frame outside the mask keeps its bytes


def test_the_batch_job_records_the_interval_and_refuses_a_bad_one(tmp_path):
    from cli_helpers import run_main
    from engine.samples.frames import generate_sample_set

    frames = tmp_path / "frames"
    generate_sample_set(frames, count=2, seed=3, with_polyps_every=1)
    out = tmp_path / "out"
    base = ["--batch", "--input", str(frames), "--mask-source", "random", "--steps", "4", "--threads", "1",
            "--quiet", "--no-judge"]
    completed = run_main([*base, "--output", str(out), "--guidance-interval", "0.3-1"])
    assert completed.returncode == 0, completed.stderr
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(r["guidance_interval"] == [0.3, 1.0] for r in records)
    assert json.loads((out / "job.json").read_text())["settings"]["guidance_interval"] == "0.3-1"
    other = run_main([*base, "--output", str(out)])  # a job of another interval does not resume into it
    assert other.returncode != 0 and "guidance_interval" in other.stderr
    bad = run_main([*base, "--output", str(tmp_path / "bad"), "--guidance-interval", "0.9-0.2"])
    assert bad.returncode == 2 and "guidance interval '0.9-0.2': needs 0 <= A < B <= 1" in bad.stderr
    empty = run_main([*base, "--output", str(tmp_path / "empty"), "--guidance-interval", "0.9-0.95"])
    assert empty.returncode == 2 and "covers none of the 4 sampling steps" in empty.stderr  # before any frame
    assert not (tmp_path / "empty" / "manifest.jsonl").exists()
    moved = run_main([*base, "--output", str(tmp_path / "moved"), "--mode", "transplant", "--mask-source", "user",
                      "--guidance-interval", "0.3-1"])
    assert moved.returncode == 2 and "guidance_interval shapes what the model paints" in moved.stderr
