"""Random-weight SD-1.5-like text-to-image pipelines and CCIS ControlNets in diffusers' folder layout.

Tests and the demo bundle build them offline (no model can be downloaded): a tiny U-Net of SD-1.5's layout
(4-channel latents, cross-attention down/mid blocks, attention_head_dim 8-style heads, no linear projection),
the KL VAE and CLIP text encoder of engine.export.random_pipeline's "tiny" size, and a CCIS ControlNet copied
from that U-Net whose zero convolutions are given random weights too (a freshly initialised ControlNet adds
exactly zero to the U-Net, which would make every comparison trivially true).
"""

from __future__ import annotations

from pathlib import Path

from engine.export.random_pipeline import ARCHITECTURES, write_clip_tokenizer_files

# Stable Diffusion v1.5's scheduler_config.json (PNDM; the engine's DDIM reads the same betas), with
# clip_sample stated so that DDIMScheduler.from_config does not fall back to its own default (True).
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

TINY_UNET = {
    "sample_size": 8,  # 64 px images: the tests run at this size
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": (2, 4),
    "norm_num_groups": 8,
    "layers_per_block": 2,
}

# Stable Diffusion v1.5's own shapes (its unet/vae/text_encoder config.json), for honest cost measurements.
SD15_FULL = {
    "unet": {"sample_size": 64, "block_out_channels": (320, 640, 1280, 1280),
             "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, "cross_attention_dim": 768,
             "attention_head_dim": 8, "layers_per_block": 2},
    "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "sample_size": 512},
    "text_encoder": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
                     "projection_dim": 768},
    "min_vocab_size": 49408,
}


def build_random_sd15_pipeline(out_dir: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """Save a seeded random-weight StableDiffusionPipeline folder (SD-1.5 layout; "tiny" shapes, or "full": SD-1.5's
    own) and return it."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out_dir = Path(out_dir)
    tokenizer_dir = out_dir / "_tokenizer_source"
    ids = write_clip_tokenizer_files(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    arch = SD15_FULL if size == "full" else ARCHITECTURES["tiny"]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, **(SD15_FULL["unet"] if size == "full" else TINY_UNET))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, **arch["vae"],
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        vocab_size=max(ids["vocab_size"], arch.get("min_vocab_size", 0)),
        bos_token_id=ids["bos_token_id"], eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"],
        **arch["text_encoder"],
    ))
    pipeline = StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(out_dir), safe_serialization=True)
    for leftover in tokenizer_dir.iterdir():
        leftover.unlink()
    tokenizer_dir.rmdir()
    return out_dir


def build_random_ccis_controlnet(
    sd15_dir: str | Path,
    out_dir: str | Path,
    blur_mask_weighting: bool = True,
    text_aware_attention: bool = True,
    blur_sigma: float = 2.0,
    seed: int = 0,
    plain: bool = False,
) -> Path:
    """Save a CCIS ControlNet copied from the pipeline's U-Net, zero convolutions randomised; ``plain`` saves
    diffusers' ControlNetModel (the same weights without the additions) instead."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from engine.models.sd_controlnet import CCISControlNetModel

    unet = UNet2DConditionModel.from_pretrained(str(Path(sd15_dir) / "unet"), local_files_only=True)
    torch.manual_seed(seed)
    model = CCISControlNetModel.from_unet(
        unet, blur_mask_weighting=blur_mask_weighting and not plain,
        text_aware_attention=text_aware_attention and not plain, blur_sigma=blur_sigma,
        conditioning_embedding_out_channels=(8, 8, 16, 16),
    )
    randomise_zero_modules(model, seed)
    if plain:
        config = {k: v for k, v in model.config.items() if not k.startswith("_")}
        for key in ("blur_mask_weighting", "text_aware_attention", "blur_sigma"):
            config.pop(key)
        plain_model = ControlNetModel(**config)
        plain_model.load_state_dict(model.state_dict())
        model = plain_model
    model.eval().save_pretrained(str(out_dir), safe_serialization=True)
    return Path(out_dir)


def randomise_zero_modules(model, seed: int = 0, scale: float = 0.2) -> None:
    """Give every all-zero weight and bias (ControlNet's zero convolutions) seeded random values."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, tensor in sorted(model.named_parameters()):
            if not torch.any(tensor):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * scale)


def build_demo_controlnet_bundle(destination: str | Path, overwrite: bool = False) -> Path:
    """The tiny random-weight sd-controlnet demo bundle (CCIS additions on), built and exported offline."""
    import tempfile

    from engine.export.controlnet_export import export_controlnet_bundle

    with tempfile.TemporaryDirectory(prefix="polypforge-demo-controlnet-") as scratch:
        sd15 = build_random_sd15_pipeline(Path(scratch) / "sd15", seed=0)
        controlnet = build_random_ccis_controlnet(sd15, Path(scratch) / "ccis", seed=0)
        return export_controlnet_bundle(
            sd15, controlnet, destination, name="demo-sd-controlnet", overwrite=overwrite,
            description="Tiny CCIS-Diff ControlNet bundle with RANDOM weights: its output is noise by design.",
            source_label="random tiny SD-1.5 + CCIS ControlNet (engine.export.random_controlnet)",
        ).bundle_dir
