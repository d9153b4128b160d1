"""Diffusion training objectives shared by every inpainting task: noising, targets, min-SNR weighting, and
Polyp-Gen's lesion-guided loss.

Per sample, with e = prediction − target at every pixel (or latent cell) and m the inpainting mask:

    base  = Σ w·e² / (C·Σ w)          w = 1 inside m, ``outside_weight`` outside (1 = plain MSE, the paper's)
    lg    = Σ m·e² / (C·Σ m)          the lesion-guided term: the error inside the mask only
    loss  = snr_weight · (base + λ·lg)

``λ`` is ``lg_weight`` (0.5 as Polyp-Gen; 0 is the ablation). ``snr_weight`` is min-SNR-γ (Hang et al. 2023):
min(SNR, γ)/SNR for ε-prediction, min(SNR, γ)/(SNR + 1) for v-prediction, 1 when γ is None.
"""

from __future__ import annotations

import torch


def alphas_cumprod_of(scheduler_config: dict) -> torch.Tensor:
    """ᾱ_t of a diffusers scheduler config (the same betas the sampler will use)."""
    from diffusers import DDPMScheduler

    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    return DDPMScheduler.from_config(config).alphas_cumprod.to(torch.float32)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a = alphas_cumprod[t.cpu()].reshape(-1, 1, 1, 1).to(x0.device)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def target_of(prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        a = alphas_cumprod[t.cpu()].reshape(-1, 1, 1, 1).to(x0.device)
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction type {prediction_type!r} is not trained here")


def min_snr_weight(prediction_type: str, alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float | None) -> torch.Tensor:
    if gamma is None:
        return torch.ones(t.shape[0])
    a = alphas_cumprod[t.cpu()]
    snr = a / (1 - a).clamp_min(1e-12)
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if prediction_type == "epsilon":
        return clipped / snr.clamp_min(1e-12)
    return clipped


def inpainting_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, lg_weight: float,
                    outside_weight: float = 1.0, sample_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The loss above; ``mask`` is (B, 1, H, W) in {0, 1} at the prediction's resolution."""
    squared = (prediction.float() - target.float()) ** 2
    channels = squared.shape[1]
    weights = mask + outside_weight * (1 - mask)
    base = (squared * weights).sum(dim=(1, 2, 3)) / (channels * weights.sum(dim=(1, 2, 3))).clamp_min(1e-8)
    inside = (squared * mask).sum(dim=(1, 2, 3)) / (channels * mask.sum(dim=(1, 2, 3))).clamp_min(1e-8)
    per_sample = base + lg_weight * inside
    if sample_weight is not None:
        per_sample = per_sample * sample_weight.to(per_sample)
    return per_sample.mean(), {"mse": float(base.detach().mean()), "mse_in_mask": float(inside.detach().mean())}
