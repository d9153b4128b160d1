"""`main.py train --from DIR`: Polyp-Gen fine-tuning of a diffusers SD-inpainting folder (tiny random model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sample_corpus(tmp_path_factory) -> Path:
    from engine.samples.frames import generate_sample_set

    folder = tmp_path_factory.mktemp("corpus")
    generate_sample_set(folder, count=8, seed=5, width=128, height=96, with_polyps_every=1)
    return folder


def test_fine_tuning_trains_the_unet_and_exports_a_parity_checked_bundle(tiny_pipeline_dir, sample_corpus, tmp_path):
    import torch
    from diffusers import UNet2DConditionModel

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    completed = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "train", "--from", str(tiny_pipeline_dir), "--input", str(sample_corpus),
         "--run", str(run), "--to", str(bundle), "--steps", "4", "--resolution", "64", "--grad-accum", "2",
         "--lr", "1e-3", "--sample-every", "4", "--log-every", "1", "--checkpoint-every", "2", "--threads", "1",
         "--held-out-fraction", "0.3", "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and "mse_in_mask" in r for r in rows if "loss" in r)
    assert (run / "samples" / "step-00000004.png").is_file()
    before = UNet2DConditionModel.from_pretrained(tiny_pipeline_dir / "unet")
    after = UNet2DConditionModel.from_pretrained(run / "diffusers" / "unet")
    changed = [k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])]
    assert len(changed) > 0.5 * len(before.state_dict())  # the U-Net learned
    vae_before = (tiny_pipeline_dir / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    from safetensors.torch import load_file

    assert all(torch.equal(a, b) for a, b in zip(load_file(str(tiny_pipeline_dir / "vae" / "diffusion_pytorch_model.safetensors")).values(),
                                                  load_file(str(run / "diffusers" / "vae" / "diffusion_pytorch_model.safetensors")).values()))
    assert vae_before  # frozen VAE saved unchanged
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["kind"] == "sd-inpaint" and "MODEL_CARD.md" in manifest["files"]
    assert all(p["max_abs_error"] <= p["allowed"] for p in manifest["parity"].values())
    from engine.bundle import read_bundle

    read_bundle(bundle)  # every file, the card included, matches its hash


def test_a_text_to_image_folder_is_refused(tmp_path):
    from engine.errors import InputError
    from engine.training.sd_task import check_inpainting_folder

    (tmp_path / "unet").mkdir()
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"in_channels": 4}))
    with pytest.raises(InputError, match="4-channel U-Net"):
        check_inpainting_folder(tmp_path)
