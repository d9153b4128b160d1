"""The committed compact CCIS ControlNet (training_runs/ccis-compact/controlnet, the real 1,000-step run on
Kvasir-SEG over the default model): it exports to a pixel-controlnet bundle whose parts pass the exporter's parity
checks, the bundle verifies and runs torch-free, keeps every byte outside the mask, and its caption's words reach
the image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CONTROLNET = REPO / "training_runs" / "ccis-compact" / "controlnet"

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from engine.export.compact_controlnet_export import export_compact_controlnet_bundle

    return export_compact_controlnet_bundle(CONTROLNET, tmp_path_factory.mktemp("ccis") / "bundle",
                                            name="polypforge-ccis-compact", card=CONTROLNET / "MODEL_CARD.md",
                                            log=lambda *_: None)


def test_the_committed_controlnet_carries_its_card_and_held_out_list():
    card = (CONTROLNET / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Kvasir-SEG" in card and "not a medical device" in card and "1000 optimiser steps" in card
    assert "/work/" not in card  # paths are written relative to the working folder
    held_out = (CONTROLNET / "held_out_frames.txt").read_text().split()
    assert len(held_out) == 56
    config = json.loads((CONTROLNET / "config.json").read_text())
    assert config["model_class"] == "CompactCCISControlNet" and config["base"] and config["controlnet"]


def test_it_exports_parity_checked_and_runs_torch_free(bundle):
    from engine.bundle import read_bundle
    from engine.pipelines import open_pipeline

    manifest = read_bundle(bundle).manifest  # every file against its sha256
    assert manifest["kind"] == "pixel-controlnet"
    for part in ("text_encoder", "controlnet", "unet", "chained"):
        parity = manifest["parity"][part]
        assert parity["max_abs_error"] <= parity["atol"] + parity["rtol"] * parity["max_abs_value"], part
    pipe = open_pipeline(bundle, provider="cpu", threads=1, purpose="inpaint")
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal((170, 90, 80), 12, (96, 128, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[30:62, 50:86] = True
    pale = pipe(frame, mask, prompt="The polyp is pale, smooth, small, round and raised, in the centre.", steps=4, seed=0)
    red = pipe(frame, mask, prompt="The polyp is red, smooth, small, round and raised, in the centre.", steps=4, seed=0)
    for result in (pale, red):
        assert np.array_equal(result.image[~mask], frame[~mask])
        assert not np.array_equal(result.image[mask], frame[mask])
    assert np.abs(pale.raw - red.raw).max() > 1e-3  # the caption's words reach the image
    from engine.errors import InputError

    with pytest.raises(InputError, match="a guidance interval needs a pixel-inpaint"):  # its sampling guides every step
        pipe(frame, mask, prompt="The polyp is pale.", steps=4, seed=0, guidance_interval="0.3-1")


def test_a_batch_job_asking_it_for_a_guidance_interval_is_refused_before_it_starts(bundle, tmp_path):
    from cli_helpers import run_main
    from engine.samples.frames import generate_sample_set

    frames = tmp_path / "frames"
    generate_sample_set(frames, count=1, seed=1, with_polyps_every=1)
    out = tmp_path / "out"
    refused = run_main(["--batch", "--input", str(frames), "--output", str(out), "--model", str(bundle),
                        "--mask-source", "random", "--guidance-interval", "0.3-1", "--quiet", "--no-judge"])
    assert refused.returncode == 2, refused.stderr
    assert "a guidance interval (--guidance-interval) needs a pixel-inpaint (compact) bundle; this one is " \
           "pixel-controlnet" in refused.stderr
    assert not (out / "manifest.jsonl").exists()  # nothing started
