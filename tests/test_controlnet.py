"""CCIS-Diff ControlNet: the PyTorch model (blur mask weighting, text-aware attention), its export to an
"sd-controlnet" bundle, and the torch-free engine pipeline against diffusers' StableDiffusionControlNetPipeline.

All on tiny random-weight models built here (engine.export.random_controlnet): 64×64 px images, 8×8 latents.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT

PROMPT = "a pale pink smooth polyp with yellowish debris"
OTHER_PROMPT = "a red flat lesion"
TOLERANCE = 1e-4  # engine vs diffusers, max |Δ| on images in [0, 1] (measured ≈ 1e-6)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from engine.export.random_controlnet import (
        build_random_ccis_controlnet,
        build_random_sd15_pipeline,
    )

    root = tmp_path_factory.mktemp("controlnet")
    sd15 = build_random_sd15_pipeline(root / "sd15", seed=0)
    return {
        "sd15": sd15,
        "ccis": build_random_ccis_controlnet(sd15, root / "ccis", seed=0),
        "plain": build_random_ccis_controlnet(sd15, root / "plain", seed=0, plain=True),
        "root": root,
    }


@pytest.fixture(scope="module")
def bundles(folders):
    """The CCIS bundle through the CLI handler (`export --from SD15 --controlnet CN --to B`), the plain one
    through the API."""
    import argparse

    from engine.cli.controlnet import add_export_options, run_export
    from engine.export.controlnet_export import export_controlnet_bundle

    parser = argparse.ArgumentParser()  # the options main.py's export command has, plus ours
    parser.add_argument("--from", dest="source", type=Path)
    parser.add_argument("--to", dest="destination", type=Path)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--opset", type=int, default=None)
    parser.add_argument("--exporter", default="auto")
    parser.add_argument("--name", default=None)
    parser.add_argument("--overwrite", action="store_true")
    add_export_options(parser)
    ccis = folders["root"] / "bundle-ccis"
    args = parser.parse_args(["--from", str(folders["sd15"]), "--controlnet", str(folders["ccis"]), "--to", str(ccis)])
    assert run_export(args) == 0
    plain = export_controlnet_bundle(
        folders["sd15"], folders["plain"], folders["root"] / "bundle-plain", log=lambda _: None
    ).bundle_dir
    return {"ccis": ccis, "plain": plain}


def _mask(height=64, width=64):
    mask = np.zeros((height, width), bool)
    mask[height // 4 : height * 11 // 16, width * 5 // 16 : width * 3 // 4] = True
    return mask


def _torch_inputs(folders, prompt=PROMPT, seed=0):
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folders["sd15"] / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(folders["sd15"] / "text_encoder")).eval()
    ids = tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        text = text_encoder(ids)[0]
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    cond = torch.from_numpy(np.repeat(_mask()[None, None], 3, axis=1).astype(np.float32))
    return sample, torch.tensor(500), text, cond


def _run(model, inputs):
    import torch

    with torch.no_grad():
        down, mid = model(*inputs, return_dict=False)
    return [t.clone() for t in down] + [mid.clone()]


def _max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------------ model
def test_shapes_and_diffusers_format_round_trip(folders, tmp_path):
    from diffusers import UNet2DConditionModel

    from engine.models.sd_controlnet import CCISControlNetModel

    model = CCISControlNetModel.from_pretrained(str(folders["ccis"])).eval()
    assert model.config.blur_mask_weighting and model.config.text_aware_attention
    unet = UNet2DConditionModel.from_pretrained(str(folders["sd15"] / "unet"))
    inputs = _torch_inputs(folders)
    outputs = _run(model, inputs)
    assert len(outputs) == len(model.controlnet_down_blocks) + 1 == 7
    # residual i has the shape of the U-Net skip it is added to: conv_in, 2 resnets, downsampler, 2 resnets; mid
    expected = [(1, 32, 8, 8)] * 3 + [(1, 32, 4, 4)] + [(1, 64, 4, 4)] * 2 + [(1, 64, 4, 4)]
    assert [tuple(o.shape) for o in outputs] == expected
    assert unet.config.block_out_channels == model.config.block_out_channels
    model.save_pretrained(str(tmp_path / "again"))
    again = CCISControlNetModel.from_pretrained(str(tmp_path / "again")).eval()
    assert json.loads((tmp_path / "again" / "config.json").read_text())["_class_name"] == "CCISControlNetModel"
    assert _max_diff(_run(again, inputs), outputs) == 0.0


def test_additions_off_equals_diffusers_controlnet(folders):
    from diffusers import ControlNetModel

    from engine.models.sd_controlnet import CCISControlNetModel

    inputs = _torch_inputs(folders)
    plain = ControlNetModel.from_pretrained(str(folders["plain"])).eval()
    # built with both additions off (config): same modules and keys as diffusers' ControlNetModel
    off = CCISControlNetModel.from_pretrained(
        str(folders["plain"]), blur_mask_weighting=False, text_aware_attention=False
    ).eval()
    assert set(off.state_dict()) == set(plain.state_dict())
    assert _max_diff(_run(off, inputs), _run(plain, inputs)) < 1e-6
    # the full CCIS model with its additions switched off at run time = diffusers on the shared weights
    ccis = CCISControlNetModel.from_pretrained(str(folders["ccis"])).eval()
    ccis.use_blur_mask = ccis.use_text_aware_attention = False
    shared = ControlNetModel.from_pretrained(str(folders["ccis"])).eval()  # drops the blur-branch weights
    assert _max_diff(_run(ccis, inputs), _run(shared, inputs)) < 1e-6


def test_each_addition_changes_the_output(folders):
    from engine.models.sd_controlnet import CCISControlNetModel

    inputs = _torch_inputs(folders)
    model = CCISControlNetModel.from_pretrained(str(folders["ccis"])).eval()
    both = _run(model, inputs)
    model.use_blur_mask = False
    no_blur = _run(model, inputs)
    model.use_blur_mask, model.use_text_aware_attention = True, False
    no_text = _run(model, inputs)
    model.use_blur_mask = False
    neither = _run(model, inputs)
    assert _max_diff(both, no_blur) > 1e-3
    assert _max_diff(both, no_text) > 1e-3
    assert _max_diff(no_blur, neither) > 1e-3  # text-aware attention alone
    assert _max_diff(no_text, neither) > 1e-3  # blur branch alone


def test_blur_branch_pieces():
    import torch

    from engine.models.sd_controlnet import BlurMaskWeighting, gaussian_blur

    mask = torch.zeros(1, 3, 32, 32)
    mask[:, :, 8:24, 8:24] = 1.0
    blurred = gaussian_blur(mask, 2.0)
    assert blurred.shape == mask.shape
    assert float(blurred.min()) >= 0.0 and float(blurred.max()) <= 1.0 + 1e-6
    assert 0.05 < float(blurred[0, 0, 16, 7]) < 0.95  # the edge is soft now
    assert abs(float(blurred.sum() - mask.sum())) < 1e-2 * float(mask.sum())  # mass kept (mask away from borders)
    assert torch.equal(gaussian_blur(mask, 0.0), mask)
    torch.manual_seed(0)
    weighting = BlurMaskWeighting(8)
    a, b = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        weights = weighting.weights(a, b)
        assert torch.allclose(weighting(a, b), weights * b)
    assert weights.shape == b.shape and float(weights.min()) > 0.0 and float(weights.max()) < 1.0


def test_text_aware_map_in_unit_range_and_depends_on_prompt(folders):
    from engine.models.sd_controlnet import CCISControlNetModel

    model = CCISControlNetModel.from_pretrained(str(folders["ccis"])).eval()
    sample, t, text, cond = _torch_inputs(folders, PROMPT)
    _, _, other_text, _ = _torch_inputs(folders, OTHER_PROMPT)
    maps = model.text_aware_maps(sample, t, text, cond)
    other = model.text_aware_maps(sample, t, other_text, cond)
    assert len(maps) == 3  # two attention blocks in the first down block + the mid block
    for score in maps:
        assert float(score.min()) >= 0.0 and float(score.max()) <= 1.0
        assert float(score.max()) == pytest.approx(1.0) and float(score.min()) == pytest.approx(0.0)
    assert max(float((a - b).abs().max()) for a, b in zip(maps, other)) > 1e-3


# ------------------------------------------------------------------------------------------------ export
def test_export_writes_a_parity_checked_bundle(bundles):
    from engine.bundle import read_bundle
    from engine.errors import BundleError
    from engine.pipelines.inpaint import InpaintPipeline

    bundle = read_bundle(bundles["ccis"])
    manifest = bundle.manifest
    assert bundle.kind == "sd-controlnet"
    assert set(manifest["parity"]) == {"text_encoder", "controlnet", "unet", "vae_decoder"}
    for part, parity in manifest["parity"].items():
        assert parity["max_abs_error"] <= parity["allowed"], part
        assert parity["max_abs_value"] > 0.1, part  # the compared outputs were not trivially zero
    assert manifest["sampling"] == {"scheduler": "ddim", "steps": 20, "guidance_scale": 7.0}
    assert manifest["controlnet"]["blur_mask_weighting"] and manifest["controlnet"]["text_aware_attention"]
    assert len(manifest["controlnet"]["residuals"]) == 7
    plain = read_bundle(bundles["plain"]).manifest["controlnet"]
    assert plain["class"] == "ControlNetModel" and not plain["blur_mask_weighting"]
    with pytest.raises(BundleError, match="not an inpainting bundle"):
        InpaintPipeline.from_bundle(bundles["ccis"], provider="cpu")


def test_export_refuses_an_inpainting_base(folders, tiny_pipeline_dir, tmp_path):
    from engine.errors import ExportError
    from engine.export.controlnet_export import export_controlnet_bundle

    with pytest.raises(ExportError, match="unet/config.json"):
        export_controlnet_bundle(tiny_pipeline_dir, folders["ccis"], tmp_path / "b", log=lambda _: None)
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------ engine
def _diffusers_reference(folders, controlnet_dir, ccis, latents, guidance_scale, mask, prompt=PROMPT):
    import torch
    from diffusers import (
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionControlNetPipeline,
    )
    from PIL import Image

    from engine.models.sd_controlnet import CCISControlNetModel

    controlnet = (CCISControlNetModel if ccis else ControlNetModel).from_pretrained(str(controlnet_dir)).eval()
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        str(folders["sd15"]), controlnet=controlnet, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    control = Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")
    return pipe(
        prompt=prompt, negative_prompt="", image=control, height=mask.shape[0], width=mask.shape[1],
        num_inference_steps=20, guidance_scale=guidance_scale, latents=torch.from_numpy(latents), output_type="np",
    ).images[0]


@pytest.mark.parametrize(
    "which, guidance_scale",
    [("plain", 7.0), ("plain", 1.0), ("ccis", 7.0)],
    ids=["additions-off-cfg7", "additions-off-no-cfg", "ccis-cfg7"],
)
def test_engine_equals_diffusers_controlnet_pipeline(folders, bundles, which, guidance_scale):
    """Additions off: the engine equals diffusers' StableDiffusionControlNetPipeline with diffusers' own
    ControlNetModel. CCIS on: the reference is the same diffusers pipeline driving the PyTorch CCIS model
    (a ControlNetModel subclass): that is the PyTorch model's own sampling loop."""
    from engine.pipelines.controlnet import ControlNetPipeline

    mask = _mask()
    latents = np.random.default_rng(7).standard_normal((1, 4, 8, 8)).astype(np.float32)
    pipe = ControlNetPipeline.from_bundle(bundles[which], provider="cpu")
    result = pipe(mask, prompt=PROMPT, negative_prompt="", latents=latents, guidance_scale=guidance_scale)
    expected = _diffusers_reference(folders, folders[which], which == "ccis", latents, guidance_scale, mask)
    assert result.raw.shape == expected.shape == (64, 64, 3)
    assert float(np.abs(result.raw - expected).max()) < TOLERANCE
    assert result.settings["steps"] == 20 and result.settings["scheduler"] == "ddim"


def test_pipeline_contract(bundles):
    from engine.errors import Cancelled, InputError
    from engine.pipelines.controlnet import ControlNetPipeline

    pipe = ControlNetPipeline.from_bundle(bundles["ccis"], provider="cpu")
    mask = _mask(96, 128)  # not the working size: resized there and back
    steps_seen = []
    first = pipe(mask, prompt=PROMPT, steps=4, seed=3, progress=lambda done, total: steps_seen.append((done, total)))
    assert steps_seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert first.image.shape == (96, 128, 3) and first.image.dtype == np.uint8
    assert first.settings["working_size"] == [80, 48] and first.raw.shape == (48, 80, 3)
    again = pipe(mask, prompt=PROMPT, steps=4, seed=3)
    assert np.array_equal(first.image, again.image)
    assert not np.array_equal(first.image, pipe(mask, prompt=PROMPT, steps=4, seed=4).image)
    assert not np.array_equal(first.raw, pipe(mask, prompt=OTHER_PROMPT, steps=4, seed=3).raw)
    assert not np.array_equal(first.raw, pipe(mask, prompt=PROMPT, steps=4, seed=3, conditioning_scale=0.0).raw)
    # variants in one batch are the same bytes as one at a time
    prepared = pipe.prepare(mask)
    batched = pipe.generate_variants(prepared, seeds=[3, 4], prompt=PROMPT, steps=4, batch_size=2)
    assert np.array_equal(batched[0].image, first.image)
    with pytest.raises(Cancelled):
        pipe(mask, prompt=PROMPT, steps=4, cancel=lambda: len(steps_seen) >= 5 or steps_seen.append(None))
    with pytest.raises(InputError, match="empty"):
        pipe(np.zeros((64, 64), bool))
    with pytest.raises(InputError, match="multiple of 16"):
        pipe(mask, working_size=(72, 64))


def test_paste_back_keeps_every_pixel_outside_the_mask(bundles):
    from engine.pipelines.controlnet import ControlNetPipeline

    pipe = ControlNetPipeline.from_bundle(bundles["ccis"], provider="cpu")
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    mask = _mask(96, 128)
    result = pipe(mask, prompt=PROMPT, frame=frame, steps=3, seed=1)
    assert result.image.shape == frame.shape and result.settings["paste_back"]
    assert np.array_equal(result.image[~mask], frame[~mask])
    assert not np.array_equal(result.image[mask], frame[mask])


INFER_WITHOUT_TORCH = textwrap.dedent(
    """
    import sys
    import numpy as np
    from engine.pipelines.controlnet import ControlNetPipeline
    pipe = ControlNetPipeline.from_bundle(sys.argv[1], provider="cpu")
    mask = np.zeros((64, 64), bool); mask[10:40, 20:50] = True
    assert pipe(mask, prompt="a polyp", steps=2).image.shape == (64, 64, 3)
    print("HEAVY:" + ",".join(sorted(m for m in ("torch", "diffusers", "transformers", "PySide6") if m in sys.modules)))
    """
)


def test_inference_imports_no_torch(bundles):
    completed = subprocess.run(
        [sys.executable, "-c", INFER_WITHOUT_TORCH, str(bundles["ccis"])], cwd=REPO_ROOT, capture_output=True, check=False,
        text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "HEAVY:\n" in completed.stdout


def test_generate_command_writes_the_image(bundles, tmp_path):
    import argparse

    from PIL import Image

    from engine.cli.controlnet import register_commands

    parser = argparse.ArgumentParser()
    handlers = register_commands(parser.add_subparsers(dest="command"))
    frame = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(frame).save(tmp_path / "frame.png")
    Image.fromarray(_mask(96, 128).astype(np.uint8) * 255).save(tmp_path / "mask.png")
    args = parser.parse_args(["generate", "--mask", str(tmp_path / "mask.png"), "--frame", str(tmp_path / "frame.png"),
                              "--model", str(bundles["ccis"]), "--out", str(tmp_path / "out.png"), "--prompt", PROMPT,
                              "--steps", "2", "--provider", "cpu"])
    assert handlers[args.command](args) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == frame.shape and np.array_equal(out[~_mask(96, 128)], frame[~_mask(96, 128)])


def test_trainable_every_new_branch_gets_gradients(folders):
    """One training step's backward pass reaches the blur branch, the weighting MLP and the trainable copy."""
    from engine.models.sd_controlnet import CCISControlNetModel

    model = CCISControlNetModel.from_pretrained(str(folders["ccis"])).train()
    sample, t, text, cond = _torch_inputs(folders)
    down, mid = model(sample, t, text, cond, return_dict=False)
    loss = sum(r.pow(2).mean() for r in down) + mid.pow(2).mean()
    loss.backward()
    for name in ("blur_cond_embedding.conv_out.weight", "blur_weighting.mlp.0.weight", "blur_weighting.mlp.4.bias",
                 "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"):  # attn2.to_k also feeds S
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().max()) > 0, name
