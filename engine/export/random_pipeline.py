"""Random-weight Stable-Diffusion-inpainting pipelines in diffusers' folder layout, built offline.

No model can be downloaded here, so tests, the demo bundle and the benchmark build their own:
- "tiny": a few-MB pipeline of the same architecture (9-channel U-Net, KL VAE, CLIP text encoder), the way
  diffusers' own tests build dummy components;
- "full": Stable-Diffusion-2-inpainting's shapes (U-Net 320/640/1280/1280 with linear projections and
  1024-wide cross-attention, the SD VAE, a 23-layer 1024-wide CLIP text encoder) with random weights, for
  honest speed and memory measurements.

The CLIP tokenizer's vocab.json/merges.txt are written here too: byte-level BPE over the 256 byte symbols
plus merges for a few domain words, laid out like OpenAI's CLIP vocabulary (byte symbols first, then their
end-of-word forms, then merged tokens, the two special tokens last).
"""

from __future__ import annotations

import json
from pathlib import Path

SIZES = ("tiny", "full")

DOMAIN_WORDS = (
    "polyp", "polyps", "normal", "mucosa", "colon", "colonoscopy", "a", "an", "the", "of", "with", "and",
    "in", "on", "small", "large", "flat", "sessile", "pedunculated", "red", "pink", "pale", "smooth",
    "lesion", "adenoma", "background", "vessels", "fold",
)

SD2_INPAINT_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


# The parts' shapes per size; what they share is passed in build_random_inpaint_pipeline.
ARCHITECTURES = {
    "tiny": {
        "unet": {
            "sample_size": 32,
            "block_out_channels": (32, 64),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": (2, 4),
        },
        "vae": {"block_out_channels": (8, 16, 32, 32), "layers_per_block": 1, "norm_num_groups": 8, "sample_size": 256},
        "text_encoder": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 3,
                         "projection_dim": 32},
        "min_vocab_size": 0,
    },
    "full": {  # Stable-Diffusion-2-inpainting
        "unet": {
            "sample_size": 64,
            "block_out_channels": (320, 640, 1280, 1280),
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "cross_attention_dim": 1024,
            "attention_head_dim": (5, 10, 20, 20),
        },
        "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "sample_size": 512},
        "text_encoder": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                         "num_hidden_layers": 23, "projection_dim": 512},
        "min_vocab_size": 49408,
    },
}


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (printable Latin-1 stays itself), in vocab order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    others = [b for b in range(256) if b not in keep]
    symbols = {byte: chr(byte) for byte in keep}
    symbols.update({byte: chr(256 + n) for n, byte in enumerate(others)})
    # Printable bytes first, as in OpenAI's CLIP vocabulary (so "!" is id 0, SD-2's pad token).
    return [symbols[b] for b in keep + others]


def write_clip_tokenizer_files(folder: Path, words=DOMAIN_WORDS, model_max_length: int = 77) -> dict[str, int]:
    """Write vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json (SD-2 style: pad "!")."""
    folder.mkdir(parents=True, exist_ok=True)
    singles = byte_symbols()
    vocab: dict[str, int] = {}
    for symbol in singles:
        vocab[symbol] = len(vocab)
    for symbol in singles:
        vocab[symbol + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            merged = parts[0] + parts[1]
            if pair not in merges:
                merges.append(pair)
                if merged not in vocab:
                    vocab[merged] = len(vocab)
            parts = [merged] + parts[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "do_lower_case": True,
        "errors": "replace",
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return {
        "vocab_size": len(vocab),
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["!"],
    }


def build_random_inpaint_pipeline(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a seeded random-weight StableDiffusionInpaintPipeline folder (diffusers layout) and return it."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if size not in SIZES:
        raise ValueError(f"size {size!r} is not one of {', '.join(SIZES)}")
    out_dir = Path(out_dir)
    tokenizer_dir = out_dir / "_tokenizer_source"
    ids = write_clip_tokenizer_files(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))

    arch = ARCHITECTURES[size]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(in_channels=9, out_channels=4, layers_per_block=2, use_linear_projection=True, **arch["unet"])
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        **arch["vae"],
    )
    text_config = CLIPTextConfig(
        max_position_embeddings=77,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        vocab_size=max(ids["vocab_size"], arch["min_vocab_size"]),
        bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"],
        pad_token_id=ids["pad_token_id"],
        **arch["text_encoder"],
    )
    text_encoder = CLIPTextModel(text_config)
    for module in (unet, vae, text_encoder):
        module.eval()
    scheduler = DDIMScheduler.from_config(SD2_INPAINT_SCHEDULER)
    pipeline = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(out_dir), safe_serialization=True)
    for leftover in tokenizer_dir.iterdir():
        leftover.unlink()
    tokenizer_dir.rmdir()
    return out_dir
