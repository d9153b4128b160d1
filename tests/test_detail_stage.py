"""The compact model's detail stage on tiny random-weight models: `main.py train --method detail` trains and
resumes exactly, its bundle (the base's + detail/) passes parity, the engine runs the stage only above the
threshold, equal to the torch sampler, changing only pixels inside the mask; bundles without it are unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_main

REPO = Path(__file__).resolve().parent.parent
TINY_ARGS = ["--widths", "8,16", "--blocks", "1", "--stem", "2", "--batch-size", "4", "--threads", "1", "--quiet",
             "--held-out-fraction", "0.25"]


@pytest.fixture(scope="module")
def sample_corpus(tmp_path_factory) -> Path:
    from engine.samples.frames import generate_sample_set

    folder = tmp_path_factory.mktemp("corpus")
    generate_sample_set(folder, count=12, seed=3, width=160, height=128, with_polyps_every=1)
    return folder


def _speaking(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A model moved off its zero-initialised output layers, so its output depends on its input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A random-weight compact base at 16² (size multiple 2), as a model folder."""
    from engine.models.compact_unet import (
        CompactConfig,
        CompactInpaintUNet,
        save_compact_model,
    )
    from engine.training.compact_task import CompactTaskConfig

    torch.manual_seed(0)
    config = CompactConfig(widths=(8, 16), blocks=1, stem=1)
    model = _speaking(CompactInpaintUNet(config), 1)
    folder = tmp_path_factory.mktemp("base") / "model"
    return save_compact_model(model, CompactTaskConfig(resolution=16, model=config), folder)


def _train(args):
    return run_main(["train", *args])


def _detail_args(corpus: Path, base: Path) -> list[str]:
    return ["--method", "detail", "--preset", "compact", "--init-from", str(base), "--input", str(corpus), *TINY_ARGS]


# ---------------------------------------------------------------------------------------------- training
def test_batches_carry_the_real_crop_brought_down_and_up(sample_corpus, tiny_base):
    from PIL import Image

    from engine.models.detail_unet import DetailConfig
    from engine.pipelines.compact import upsampled_condition
    from engine.training.corpus import load_corpus
    from engine.training.detail_task import DetailTask, DetailTaskConfig

    corpus = load_corpus([sample_corpus], held_out_fraction=0.25)
    task = DetailTask(corpus, DetailTaskConfig(resolution=32, base_resolution=16, batch_size=4,
                                               model=DetailConfig(widths=(8, 16), stem=2)))
    batch = task.make_batch(0, np.random.default_rng(0))
    assert batch["low"].shape == batch["x0"].shape == (4, 3, 32, 32)
    first = ((batch["x0"][0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    expected = upsampled_condition(np.asarray(Image.fromarray(first).resize((16, 16), Image.Resampling.LANCZOS)), (32, 32))
    assert np.array_equal(batch["low"][0].numpy(), expected)
    again = task.make_batch(0, np.random.default_rng(0))
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    loss, parts = task.loss(task.build_model(), batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and parts["mse_in_mask"] > 0


def test_stopped_then_resumed_equals_uninterrupted(sample_corpus, tiny_base, tmp_path):
    from safetensors.torch import load_file

    common = [*_detail_args(sample_corpus, tiny_base), "--checkpoint-every", "3", "--sample-every", "0",
              "--validate-every", "0", "--no-export"]
    whole = _train([*common, "--steps", "6", "--run", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-2000:]
    first = _train([*common, "--steps", "3", "--run", str(tmp_path / "split")])
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = _train([*common, "--steps", "6", "--run", str(tmp_path / "split")])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-00000006" / "tensors.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000006" / "tensors.safetensors"))
    keys = [k for k in a if k.startswith(("model.", "ema."))]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys)


def test_detail_needs_a_base(sample_corpus, tmp_path):
    completed = _train(["--method", "detail", "--preset", "compact", "--input", str(sample_corpus), *TINY_ARGS,
                        "--steps", "1", "--run", str(tmp_path / "run")])
    assert completed.returncode == 2 and "--init-from" in completed.stderr


# ---------------------------------------------------------------------------------------------- bundle + engine
@pytest.fixture(scope="module")
def trained(sample_corpus, tiny_base, tmp_path_factory) -> dict:
    """A 4-step detail run with its bundle; then both stages made to speak and exported again, with and without
    the detail part."""
    from engine.export.compact_export import export_compact_bundle
    from engine.models.detail_unet import load_detail_model, save_detail_model
    from engine.training.detail_task import DetailTaskConfig

    root = tmp_path_factory.mktemp("detail")
    run, bundle = root / "run", root / "bundle"
    completed = _train([*_detail_args(sample_corpus, tiny_base), "--steps", "4", "--sample-every", "2",
                        "--validate-every", "2", "--checkpoint-every", "2", "--log-every", "1", "--run", str(run),
                        "--to", str(bundle)])
    assert completed.returncode == 0, completed.stderr[-3000:]
    model, config = load_detail_model(run / "model")
    task = dict(config["task"])
    task_config = DetailTaskConfig(**{**task, "model": model.config, "padding_range": tuple(task["padding_range"])})
    task_config.min_region_side = 40  # the tiny frames' crops: run above 40 px
    save_detail_model(_speaking(model, 2), task_config, root / "speaking")
    quiet = lambda _: None
    with_detail = export_compact_bundle(tiny_base, root / "with-detail", detail_dir=root / "speaking", log=quiet)
    without = export_compact_bundle(tiny_base, root / "without", log=quiet)
    return {"run": run, "bundle": bundle, "with": with_detail, "without": without, "detail": root / "speaking"}


def test_the_run_writes_grids_and_a_bundle_with_the_detail_part(trained):
    from engine.bundle import read_bundle

    run = trained["run"]
    for name in ("MODEL_CARD.md", "log.jsonl", "samples/step-00000004.png", "model/config.json", "model/model.safetensors"):
        assert (run / name).is_file(), name
    validations = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if "hf_detail_over_real" in l]
    assert validations and all(v["hf_detail_over_real"] >= 0 and v["hf_lowres_over_real"] >= 0 for v in validations)
    bundle = read_bundle(trained["bundle"])
    assert bundle.kind == "pixel-inpaint" and bundle.has_part("detail")
    section = bundle.manifest["detail"]
    assert section["scale"] == 2 and section["image_size"] == 32 and section["steps"] == 8
    assert section["parity"]["max_abs_error"] < 1e-4 and section["scheduler_config"] == bundle.manifest["scheduler"]
    assert "detail/MODEL_CARD.md" in bundle.manifest["files"]
    plain = read_bundle(trained["without"])
    assert not plain.has_part("detail") and "detail" not in plain.manifest


def test_a_bundle_listing_the_part_without_its_section_is_refused(trained, tmp_path):
    from engine.bundle import read_bundle
    from engine.errors import BundleError

    copy = shutil.copytree(trained["with"], tmp_path / "broken")
    manifest = json.loads((copy / "bundle.json").read_text())
    del manifest["detail"]
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="detail"):
        read_bundle(copy)


def _frame_and_masks():
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 255, (120, 150, 3), dtype=np.uint8)
    large = np.zeros((120, 150), bool)
    large[30:80, 40:100] = True  # crop ≈ 96 px > 40
    small = np.zeros((120, 150), bool)
    small[50:62, 60:74] = True  # crop ≈ 22 px ≤ 40
    return frame, large, small


def test_engine_runs_the_stage_above_the_threshold_like_torch(trained, tiny_base):
    from engine.models.compact_unet import load_compact_model
    from engine.models.detail_unet import load_detail_model
    from engine.pipelines.compact import (
        CompactInpaintPipeline,
        detail_noise,
        upsampled_condition,
    )
    from engine.training.compact_task import sample_inpaint
    from engine.training.detail_task import sample_detail

    pipe = CompactInpaintPipeline.from_bundle(trained["with"], provider="cpu")
    assert pipe.STAGES == ("unet", "detail")
    frame, large, _ = _frame_and_masks()
    prepared = pipe.prepare_frame(frame, large)
    w, h = prepared.working_size
    noise = np.random.default_rng(2).standard_normal((1, 3, h, w)).astype(np.float32)
    seen = []
    result = pipe.generate_variants(prepared, [0], latents=[noise], steps=5, progress=lambda d, t: seen.append((d, t)))[0]
    plan = result.settings["detail"]
    assert plan["ran"] and plan["working_size"] == [2 * w, 2 * h] and plan["steps"] == 8
    assert result.raw.shape == (2 * h, 2 * w, 3)
    assert seen[-1] == (13, 13) and [d for d, _ in seen] == list(range(1, 14))
    assert pipe.stage_seconds["detail"] > 0

    base, base_config = load_compact_model(tiny_base)
    detail, detail_config = load_detail_model(trained["detail"])
    scheduler = base_config["task"]["scheduler"]
    low64 = sample_inpaint(base, torch.from_numpy(prepared.image), torch.from_numpy(prepared.work_mask),
                           torch.tensor([1]), torch.from_numpy(noise), scheduler, 5, pipe.defaults["guidance_scale"])
    composite = low64.clamp(-1, 1).numpy() * prepared.work_mask + prepared.image * (1 - prepared.work_mask)
    pixels = np.rint((composite / 2 + 0.5) * 255).clip(0, 255).astype(np.uint8)[0].transpose(1, 2, 0)
    low = torch.from_numpy(upsampled_condition(pixels, (2 * w, 2 * h)))[None]
    x0, y0, x1, y1 = prepared.crop
    from engine.masks.geometry import resize_mask
    from engine.pipelines.framing import frame_to_model_input

    image = torch.from_numpy(frame_to_model_input(np.ascontiguousarray(frame[y0:y1, x0:x1]), 2 * w, 2 * h))
    mask = torch.from_numpy(resize_mask(large[y0:y1, x0:x1], 2 * w, 2 * h).astype(np.float32))[None, None]
    sampling_noise, low_noise = detail_noise(noise[0], (3, 2 * h, 2 * w))
    reference = sample_detail(detail, low, image, mask, torch.from_numpy(sampling_noise)[None],
                              torch.from_numpy(low_noise)[None], scheduler, 8, detail_config["task"]["sample_noise_level"])
    reference = (reference.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).numpy()[0]
    assert np.abs(reference - result.raw).max() < 1e-3
    assert np.array_equal(result.image[~large], frame[~large])
    assert not np.array_equal(result.image[large], frame[large])
    # the stage changed the picture: not what the base alone paints
    alone = CompactInpaintPipeline.from_bundle(trained["without"], provider="cpu")
    base_only = alone.generate_variants(alone.prepare_frame(frame, large), [0], latents=[noise], steps=5)[0]
    assert not np.array_equal(base_only.image[large], result.image[large])


def test_below_the_threshold_and_without_the_part_nothing_changes(trained):
    from engine.bundle import read_bundle
    from engine.pipelines.compact import CompactInpaintPipeline

    frame, large, small = _frame_and_masks()
    with_detail = CompactInpaintPipeline.from_bundle(trained["with"], provider="cpu")
    without = CompactInpaintPipeline.from_bundle(trained["without"], provider="cpu")
    assert without.STAGES == ("unet",) and without.detail is None
    for seed in (0, 1):
        a = with_detail.generate_variants(with_detail.prepare_frame(frame, small), [seed], steps=4)[0]
        b = without.generate_variants(without.prepare_frame(frame, small), [seed], steps=4)[0]
        assert a.settings["detail"] == {"ran": False, "region_side": a.settings["region_crop"][2] - a.settings["region_crop"][0],
                                        "min_region_side": 40}
        assert np.array_equal(a.image, b.image) and "detail" not in b.settings
        assert {k: v for k, v in a.settings.items() if k != "detail"} == b.settings
    # whole-frame mode: the stage is for region crops only
    c = with_detail.generate_variants(with_detail.prepare_frame(frame, large, inpaint_area="frame"), [0], steps=2)[0]
    assert c.settings["detail"]["ran"] is False
    # the committed default bundle has no detail part and still verifies
    default = read_bundle(REPO / "exported_models" / "polypforge-compact")
    assert not default.has_part("detail") and "detail" not in default.manifest
