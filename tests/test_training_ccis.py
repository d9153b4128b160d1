"""`main.py train --method ccis`: CCIS-Diff's ControlNet trained on the one trainer, on a tiny random SD-1.5-shaped
base and generated frames with captions from `main.py caption`: it learns, text dropout drops about half, kill -9 +
resume equals an uninterrupted run, ablation switches remove their modules, the exported bundle runs in the
torch-free pipeline equal to the trained torch model, the base stays bit-identical, bad inputs give one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_main

REPO = Path(__file__).resolve().parent.parent
TINY = ["--resolution", "64", "--threads", "1", "--quiet", "--held-out-fraction", "0.25", "--blur-sigma", "2",
        "--lr", "1e-3", "--batch-size", "2", "--sample-steps", "2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from engine.export.random_controlnet import build_random_sd15_pipeline
    from engine.samples.frames import generate_sample_set

    root = tmp_path_factory.mktemp("ccis")
    corpus = root / "corpus"
    generate_sample_set(corpus, count=8, seed=7, width=128, height=96, with_polyps_every=1)
    captions = root / "captions.csv"
    done = subprocess.run([sys.executable, str(REPO / "main.py"), "caption", "--input", str(corpus / "images"),
                           "--masks", str(corpus / "masks"), "--out", str(captions)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"root": root, "corpus": corpus, "captions": captions, "sd15": build_random_sd15_pipeline(root / "sd15", seed=0)}


def _train_args(setup, run: Path, *extra) -> list[str]:
    return ["train", "--method", "ccis", "--from", str(setup["sd15"]), "--input", str(setup["corpus"]),
            "--captions", str(setup["captions"]), "--run", str(run), *TINY, *extra]


def _train(setup, run: Path, *extra):
    """The run in this process (the subprocess would spend ~12 s importing diffusers); only a killed run needs one."""
    return run_main(_train_args(setup, run, *extra))


def _task(setup, **changes):
    from engine.training.ccis_task import CCISControlNetTask, CCISTaskConfig
    from engine.training.corpus import load_corpus

    corpus = load_corpus([setup["corpus"]], [], held_out_fraction=0.25)
    config = CCISTaskConfig(source=str(setup["sd15"]), captions=str(setup["captions"]), resolution=64, batch_size=2,
                            blur_sigma=2.0, **changes)
    return CCISControlNetTask(corpus, config)


def test_captions_feed_the_task_and_text_dropout_drops_about_half(setup):
    task = _task(setup)
    assert task.uncaptioned == 0 and all(text.startswith("The polyp is") for text in task.captions.values())
    captions = [c for step in range(200) for c in task.make_batch(step, np.random.default_rng(step))["captions"]]
    empty = sum(1 for c in captions if c == "") / len(captions)
    assert 0.4 < empty < 0.6
    batch = task.make_batch(0, np.random.default_rng(0))
    assert batch["pixels"].shape == (2, 3, 64, 64) and batch["condition"].shape == (2, 3, 64, 64)
    assert set(torch.unique(batch["condition"]).tolist()) <= {0.0, 1.0} and batch["condition"].max() == 1.0


def test_a_short_run_lowers_the_loss_on_a_fixed_batch(setup):
    task = _task(setup, text_dropout=0.0)
    torch.set_num_threads(1)  # the other processes of the suite have the other core
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = task.make_batch(0, np.random.default_rng(0))

    def fixed_loss():
        return task.loss(model, batch, torch.Generator().manual_seed(0))[0]

    with torch.no_grad():
        before = float(fixed_loss())
    for _ in range(25):
        optimizer.zero_grad()
        loss = fixed_loss()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(fixed_loss())
    assert after < 0.8 * before, (before, after)


def test_ablation_switches_remove_their_modules(setup):
    full = _task(setup).build_model()
    assert hasattr(full, "blur_cond_embedding") and full.use_text_aware_attention
    ablated = _task(setup, blur_mask_weighting=False, text_aware_attention=False).build_model()
    assert not hasattr(ablated, "blur_cond_embedding") and not ablated.use_text_aware_attention
    assert not ablated.config.blur_mask_weighting and not ablated.config.text_aware_attention


def test_kill_9_then_resume_equals_uninterrupted_and_other_switches_refuse(setup, tmp_path):
    from safetensors.torch import load_file

    common = ["--steps", "8", "--checkpoint-every", "2", "--sample-every", "0", "--validate-every", "0", "--no-export"]
    whole = _train(setup, tmp_path / "whole", *common)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(REPO / "main.py"), *_train_args(setup, run, *common)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoints" / "step-00000004").is_dir():
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert done and "step-00000008" not in done, done
    resumed = _train(setup, run, *common)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "step-00000008" / "tensors.safetensors"))
    b = load_file(str(run / "checkpoints" / "step-00000008" / "tensors.safetensors"))
    keys = [k for k in a if k.startswith("model.")]
    assert keys and any("blur_cond_embedding" in k for k in keys)
    for key in keys:
        assert torch.equal(a[key], b[key]), key

    refused = _train(setup, run, *common, "--no-text-attention")
    assert refused.returncode == 2 and "error:" in refused.stderr and len(refused.stderr.strip().splitlines()) <= 3


def test_trained_controlnet_exports_and_the_engine_equals_torch(setup, tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from engine.bundle import read_bundle
    from engine.models.sd_controlnet import CCISControlNetModel
    from engine.pipelines.controlnet import ControlNetPipeline

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    base_before = {k: v.clone() for k, v in load_file(
        str(setup["sd15"] / "unet" / "diffusion_pytorch_model.safetensors")).items()}
    done = _train(setup, run, "--steps", "4", "--checkpoint-every", "2", "--sample-every", "4", "--validate-every", "2",
                  "--log-every", "1", "--to", str(bundle))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert any("val_loss" in r for r in rows)
    assert (run / "samples" / "step-00000004.png").is_file()
    card = (run / "MODEL_CARD.md").read_text()
    assert "captions" in card and "blur_mask_weighting" in card

    # the base was frozen: its U-Net is bit-identical
    after = load_file(str(setup["sd15"] / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)

    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["kind"] == "sd-controlnet" and "MODEL_CARD.md" in manifest["files"]
    read_bundle(bundle)  # every file matches its hash
    trained = CCISControlNetModel.from_pretrained(run / "controlnet")
    initial = CCISControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(setup["sd15"] / "unet"), blur_sigma=2.0)
    changed = [k for k, v in initial.state_dict().items() if not torch.equal(v, trained.state_dict()[k])]
    assert changed  # the ControlNet learned

    # torch-free engine vs the trained torch ControlNet + base, same latents (the exporter checked its parts;
    # this is the whole loop)
    pipe = ControlNetPipeline.from_bundle(bundle, provider="cpu", threads=1)
    mask = np.zeros((64, 64), bool)
    mask[16:44, 20:48] = True
    latents = np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)
    text = "The polyp is red, smooth, small and round"
    engine = pipe(mask, prompt=text, negative_prompt="", latents=latents, guidance_scale=7.0, steps=3)
    reference = _diffusers_reference(setup["sd15"], run / "controlnet", latents, mask, text)
    assert np.abs(engine.raw - reference).max() < 1e-4


def _diffusers_reference(sd15: Path, controlnet_dir: Path, latents: np.ndarray, mask: np.ndarray, prompt: str):
    from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline
    from PIL import Image

    from engine.models.sd_controlnet import CCISControlNetModel

    controlnet = CCISControlNetModel.from_pretrained(controlnet_dir).eval()
    pipe = StableDiffusionControlNetPipeline.from_pretrained(sd15, controlnet=controlnet, safety_checker=None,
                                                             requires_safety_checker=False, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    condition = Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")
    with torch.no_grad():
        out = pipe(prompt=prompt, negative_prompt="", image=condition, height=64, width=64, num_inference_steps=3, guidance_scale=7.0,
                   latents=torch.from_numpy(latents), output_type="np").images[0]
    return out


def test_bad_inputs_give_one_line(setup, tmp_path):
    missing = tmp_path / "few.csv"
    rows = (setup["captions"]).read_text().splitlines()
    missing.write_text("\n".join(rows[:2]) + "\n")
    done = run_main(["train", "--method", "ccis", "--from", str(setup["sd15"]), "--input", str(setup["corpus"]),
                     "--captions", str(missing), "--run", str(tmp_path / "r"), *TINY, "--steps", "1"])
    assert done.returncode == 2 and "few.csv" in done.stderr and "--allow-uncaptioned" in done.stderr
    no_captions = run_main(["train", "--method", "ccis", "--from", str(setup["sd15"]), "--input", str(setup["corpus"]),
                            "--run", str(tmp_path / "r2"), *TINY, "--steps", "1"])
    assert no_captions.returncode == 2 and "--captions" in no_captions.stderr

    from engine.errors import InputError
    from engine.training.ccis_task import check_text_to_image_folder

    (tmp_path / "inpaint" / "unet").mkdir(parents=True)
    (tmp_path / "inpaint" / "model_index.json").write_text("{}")
    (tmp_path / "inpaint" / "unet" / "config.json").write_text(json.dumps({"in_channels": 9}))
    with pytest.raises(InputError, match="9-channel U-Net"):
        check_text_to_image_folder(tmp_path / "inpaint")
