"""What the inpainting (Polyp-Gen) and ControlNet (CCIS-Diff) pipelines share: the bundle's sampling fields,
prompt encoding with a cache, the sampling defaults, per-variant initial noise, the classifier-free-guided
denoising loop (progress and cancel each step) and one-at-a-time VAE decoding.

A subclass supplies the model call of one step: ``predict(model_input, t) -> noise`` on the 2·N batch
(unconditional half first when guided).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np

from engine.bundle import Bundle
from engine.errors import Cancelled, InputError
from engine.pipelines.framing import decoded_to_image
from engine.runtime.session import OnnxPart
from engine.schedulers import SCHEDULER_NAMES, make_scheduler
from engine.text.clip_tokenizer import PromptTokenizer

ProgressCallback = Callable[[int, int], None]  # (steps done, steps in total)
CancelCheck = Callable[[], bool]
NoisePredictor = Callable[[np.ndarray, int], np.ndarray]


class OnnxDiffusionPipeline:
    STAGES: tuple[str, ...] = ()
    PROMPT_CACHE_SIZE = 16

    def __init__(self, bundle: Bundle, parts: dict[str, OnnxPart], tokenizer: PromptTokenizer | None):
        self.bundle = bundle
        self.parts = parts
        self.tokenizer = tokenizer
        manifest = bundle.manifest
        self.image_size = int(manifest["image_size"])
        self.size_multiple = int(manifest["size_multiple"])
        # Latent-space bundles (sd-*) have a VAE; a pixel-space one (pixel-inpaint) denoises the image itself.
        self.vae_scale_factor = int(manifest.get("vae_scale_factor", 1))
        self.vae_scaling_factor = float(manifest.get("vae_scaling_factor", 1.0))
        self.latent_channels = int(manifest.get("latent_channels", manifest.get("image_channels", 3)))
        self.scheduler_config = dict(manifest["scheduler"])
        self.defaults = dict(manifest["sampling"])
        self.prompts = dict(manifest["prompts"])
        self.provider = (parts.get("unet") or next(iter(parts.values()))).active_provider
        notes = {p.provider_note for p in parts.values() if p.provider_note}
        self.provider_note: str | None = "; ".join(sorted(notes)) or None
        self.stage_seconds = dict.fromkeys(self.STAGES, 0.0)
        self._prompt_cache: OrderedDict[tuple[str, str, bool], np.ndarray] = OrderedDict()

    def describe(self) -> dict:
        return {**self.bundle.describe(), "provider": self.provider, "provider_note": self.provider_note}

    def reset_stage_seconds(self) -> None:
        self.stage_seconds = dict.fromkeys(self.STAGES, 0.0)

    # ------------------------------------------------------------------ prompt
    def encode_prompt(self, prompt: str, negative_prompt: str = "", guided: bool = True) -> np.ndarray:
        """Text embeddings (2, L, D) = [negative, prompt] when guided, else (1, L, D); cached per prompt pair."""
        key = (prompt, negative_prompt, guided)
        cached = self._prompt_cache.get(key)
        if cached is not None:
            self._prompt_cache.move_to_end(key)
            return cached
        texts = [negative_prompt, prompt] if guided else [prompt]
        embeddings = self._run_text_encoder(self.tokenizer(texts))
        self._prompt_cache[key] = embeddings
        while len(self._prompt_cache) > self.PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        return embeddings

    def _text_encoder(self) -> OnnxPart:
        return self.parts["text_encoder"]

    def _run_text_encoder(self, ids: np.ndarray) -> np.ndarray:
        part = self._text_encoder()
        started = time.perf_counter()
        (embeddings,) = part.run(["last_hidden_state"], {"input_ids": ids})
        self.stage_seconds["text_encoder"] += time.perf_counter() - started
        self._after_text_encoder(part)
        return embeddings.astype(np.float32)

    def _after_text_encoder(self, part: OnnxPart) -> None:
        """Hook: keep or release the text encoder after use (the inpainting pipeline releases it)."""

    # ------------------------------------------------------------------ sampling
    def sampling_settings(self, steps, guidance_scale, scheduler, batch_size) -> tuple[int, float, str]:
        """Steps, guidance and scheduler with the bundle's defaults filled in, checked."""
        steps = int(self.defaults["steps"] if steps is None else steps)
        guidance_scale = float(self.defaults["guidance_scale"] if guidance_scale is None else guidance_scale)
        scheduler = self.defaults["scheduler"] if scheduler is None else scheduler
        if scheduler not in SCHEDULER_NAMES:
            raise InputError(f"scheduler {scheduler!r} is not one of {', '.join(SCHEDULER_NAMES)}")
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        return steps, guidance_scale, scheduler

    def denoise(
        self,
        latents: np.ndarray,
        steps: int,
        scheduler_name: str,
        guidance_scale: float,
        guided: bool,
        predict: NoisePredictor,
        progress: ProgressCallback | None,
        cancel: CancelCheck | None,
    ) -> np.ndarray:
        """The sampling loop: scale the initial noise, then per timestep predict (on [latents] × 2 when
        guided), guide, and step the numpy scheduler; cancel is checked before every step."""
        copies = 2 if guided else 1
        scheduler = make_scheduler(scheduler_name, self.scheduler_config)
        scheduler.set_timesteps(steps)
        scheduler.set_begin_index(0)  # as diffusers' pipelines do at strength 1 (matters for repeated timesteps)
        latents = (latents * scheduler.init_noise_sigma).astype(np.float32)
        total = len(scheduler.timesteps)
        for step_index, t in enumerate(scheduler.timesteps):
            if cancel is not None and cancel():
                raise Cancelled(f"cancelled at step {step_index} of {total}")
            model_input = scheduler.scale_model_input(np.concatenate([latents] * copies), t).astype(np.float32)
            noise_pred = predict(model_input, t).astype(np.float32)
            if guided:
                uncond, cond = np.split(noise_pred, 2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(noise_pred, t, latents).astype(np.float32)
            if progress is not None:
                progress(step_index + 1, total)
        return latents

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Decode one latent at a time: the VAE decoder's activations dominate peak memory at full size."""
        images = []
        for row in range(latents.shape[0]):
            started = time.perf_counter()
            (decoded,) = self.parts["vae_decoder"].run(
                ["sample"], {"latent_sample": latents[row : row + 1] / self.vae_scaling_factor}
            )
            self.stage_seconds["vae_decoder"] += time.perf_counter() - started
            images.append(decoded_to_image(decoded.astype(np.float32))[0])
        return np.stack(images)

    def timed_run(self, stage: str, part: OnnxPart, outputs: list[str], feeds: dict) -> list[np.ndarray]:
        started = time.perf_counter()
        result = part.run(outputs, feeds)
        self.stage_seconds[stage] += time.perf_counter() - started
        return result


def given_or_drawn(given: Sequence[np.ndarray] | None, index: int, rng, shape, name: str) -> np.ndarray:
    """Explicit noise when the caller passes it (checked for shape), else drawn from the variant's seed.
    The draw happens either way, so a variant's later draws do not depend on what was given."""
    drawn = rng.standard_normal(shape, dtype=np.float32)
    if given is None:
        return drawn
    array = np.asarray(given[index], dtype=np.float32)
    if array.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {array.shape}")
    return array
