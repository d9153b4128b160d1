"""The committed default model: exported_models/polypforge-compact (the bundle the engine runs) and its torch
original training_runs/compact-anneal/model (what the trainer wrote: the long run's annealed continuation). The bundle verifies, runs torch-free, and agrees
with the torch model part by part and over a whole sampling run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "exported_models" / "polypforge-compact"
TORCH_ORIGINAL = REPO / "training_runs" / "compact-anneal" / "model"


def test_the_default_model_is_the_compact_bundle_and_verifies():
    from engine.bundle import read_bundle
    from engine.jobs.spec import DEFAULT_MODEL

    assert DEFAULT_MODEL.resolve() == BUNDLE.resolve()
    bundle = read_bundle(BUNDLE)  # every file against its sha256
    assert bundle.kind == "pixel-inpaint"
    assert "MODEL_CARD.md" in bundle.manifest["files"] and bundle.manifest["model_card"] == "MODEL_CARD.md"
    card = (BUNDLE / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Kvasir-SEG" in card and "research" in card and "not a medical device" in card
    assert bundle.size_bytes() < 40 * 2**20


def test_onnx_unet_equals_its_torch_original():
    import onnxruntime as ort
    import torch

    from engine.models.compact_unet import load_compact_model

    model, config = load_compact_model(TORCH_ORIGINAL)
    manifest = json.loads((BUNDLE / "bundle.json").read_text())
    assert manifest["architecture"] == model.config.to_json()
    session = ort.InferenceSession(str(BUNDLE / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for h, w in ((64, 64), (48, 80)):
        sample = torch.randn(2, 7, h, w, generator=generator)
        timestep = torch.tensor([999.0, 10.0])
        labels = torch.tensor([1, 2])
        with torch.no_grad():
            expected = model(sample, timestep, labels).numpy()
        (actual,) = session.run(["out_sample"], {"sample": sample.numpy(), "timestep": timestep.numpy(),
                                                 "class_labels": labels.numpy()})
        assert np.abs(actual - expected).max() <= 1e-4 + 1e-3 * np.abs(expected).max()


def test_engine_sampling_equals_the_torch_sampler_on_a_frame():
    import torch

    from engine.pipelines.compact import CompactInpaintPipeline
    from engine.samples.frames import generate_frame
    from engine.models.compact_unet import load_compact_model
    from engine.training.compact_task import sample_inpaint

    model, config = load_compact_model(TORCH_ORIGINAL)
    pipe = CompactInpaintPipeline.from_bundle(BUNDLE, provider="cpu")
    frame, _ = generate_frame(11, 320, 256)
    mask = np.zeros(frame.shape[:2], bool)
    mask[90:170, 120:210] = True
    prepared = pipe.prepare_frame(frame, mask)
    w, h = prepared.working_size
    noise = np.random.default_rng(2).standard_normal((1, 3, h, w)).astype(np.float32)
    result = pipe.generate_variants(prepared, [0], latents=[noise], steps=8)[0]
    reference = sample_inpaint(model, torch.from_numpy(prepared.image), torch.from_numpy(prepared.work_mask),
                               torch.tensor([1]), torch.from_numpy(noise), config["task"]["scheduler"], 8,
                               pipe.defaults["guidance_scale"])
    reference = (reference.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).numpy()[0]
    assert np.abs(reference - result.raw).max() < 1e-3
    assert np.array_equal(result.image[~mask], frame[~mask])


def test_a_larger_working_size_reaches_the_model_and_the_manifest(tmp_path):
    """`--working-size 96` (job key working_size): the default model works at about 96² pixels of the region
    instead of its 64², each variant's manifest line says so, the frame outside the mask keeps its bytes, a job
    of another working size does not resume into it, and a size out of range is refused with one line."""
    import cv2

    from cli_helpers import run_main
    from engine.dataset.image_reader import read_frame
    from engine.dataset.contact_sheet import NEW_POLYP_ORIGINS
    from engine.masks.instances import Instance
    from engine.samples.frames import generate_sample_set

    frames = tmp_path / "frames"
    generate_sample_set(frames, count=2, seed=4, with_polyps_every=1)
    sizes = {}
    for size in (None, 96):
        out = tmp_path / f"out-{size}"
        args = ["--batch", "--input", str(frames), "--output", str(out), "--mask-source", "random", "--steps", "3",
                "--threads", "1", "--quiet", "--no-judge"] + ([] if size is None else ["--working-size", str(size)])
        completed = run_main(args)
        assert completed.returncode == 0, completed.stderr
        records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        assert [r["status"] for r in records] == ["ok", "ok"]
        sizes[size] = [r["working_size"] for r in records]
        for record in records:
            image = read_frame(out / record["image"])
            source = read_frame(frames / "images" / record["source_frame"])
            region = np.zeros(source.shape[:2], bool)
            for instance in record["instances"]:
                if instance["origin"] in NEW_POLYP_ORIGINS:
                    region |= Instance.from_json(instance).raster(*source.shape[:2])
            # The label's polygon is traced from the painted mask: allow its outline a pixel or two.
            grown = cv2.dilate(region.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            assert region.any() and np.array_equal(image[~grown], source[~grown])
    for (w64, h64), (w96, h96) in zip(sizes[None], sizes[96]):
        assert abs(w64 * h64 - 64 * 64) <= 0.25 * 64 * 64 and abs(w96 * h96 - 96 * 96) <= 0.25 * 96 * 96
        assert w96 % 4 == 0 and h96 % 4 == 0
    refused = run_main(["--batch", "--input", str(frames), "--output", str(tmp_path / "out-None"),
                        "--mask-source", "random", "--steps", "3", "--working-size", "96", "--quiet"])
    assert refused.returncode != 0 and "working_size" in refused.stderr
    tiny = run_main(["--batch", "--input", str(frames), "--output", str(tmp_path / "bad"), "--working-size", "8"])
    assert tiny.returncode == 2 and "working_size must be between 16 and 2048 pixels, got 8" in tiny.stderr
