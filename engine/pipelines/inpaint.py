"""Polyp-Gen inpainting on onnxruntime: a Stable-Diffusion-2-inpainting bundle (9-channel U-Net), no torch.

A call reads top to bottom: check inputs → encode prompt (cached per prompt pair) → prepare the frame once
(resize to working size, mask to latent size, VAE-encode the masked frame) → per batch of variants: draw
initial noise from each variant's seed, denoise (progress and cancel each step) → decode → paste the masked
region back into the original frame.

The maths is diffusers' StableDiffusionInpaintPipeline with ``strength=1``: masked image = image · (mask < ½),
its latents are a sample of the VAE posterior times the scaling factor, the mask is resized to latent size by
nearest neighbour, and the U-Net input is [noisy latents, mask, masked-image latents] on the channel axis;
classifier-free guidance runs the unconditional and conditional halves as one batch of 2·N.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from engine.bundle import Bundle
from engine.errors import BundleError
from engine.masks.geometry import nearest_resize_like_torch
from engine.pipelines.diffusion_base import (
    CancelCheck,
    InpaintingPipeline,
    PreparedFrame,
    ProgressCallback,
)
from engine.runtime.opening import BundleSource
from engine.runtime.providers import plan_providers
from engine.runtime.session import OnnxPart
from engine.text.clip_tokenizer import PromptTokenizer

STAGES = ("text_encoder", "vae_encoder", "unet", "vae_decoder")


class InpaintPipeline(InpaintingPipeline):
    """Load with ``from_bundle``; call with a frame and mask; ``generate_variants`` for several seeds."""

    KIND = "sd-inpaint"
    REFUSAL = "an inpainting bundle"
    STAGES = STAGES
    EXTRA_NOISE = ("masked_image_noise",)  # the VAE posterior sample of the masked frame

    def __init__(
        self,
        bundle: Bundle,
        parts: dict[str, OnnxPart],
        tokenizer: PromptTokenizer,
        load_text_encoder: Callable[[], OnnxPart],
        keep_text_encoder: bool = False,
    ):
        super().__init__(bundle, parts, tokenizer)
        self._load_text_encoder = load_text_encoder
        self.keep_text_encoder = keep_text_encoder

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_bundle(
        cls,
        source: BundleSource,
        provider: str = "auto",
        threads: int | None = None,
        verify_hashes: bool = True,
        keep_text_encoder: bool = False,
    ) -> InpaintPipeline:
        """Verify (unless ``source`` is a Bundle already read) and load a bundle. The text encoder runs first,
        encodes the bundle's default prompts, and is released before the U-Net loads (unless
        ``keep_text_encoder``): a job needs it once, and at full size it is 1.4 GB of weights that would otherwise
        sit beside the U-Net for the whole job. Another prompt loads it again for as long as it takes to encode it."""
        bundle = cls.read(source, verify_hashes)
        manifest = bundle.manifest
        plan = plan_providers(provider, fp16=manifest["precision"] == "fp16")
        tok = manifest["tokenizer"]
        tokenizer = PromptTokenizer(
            bundle.path_of("tokenizer"), tok["max_length"], tok["pad_token_id"], tok["eos_token_id"]
        )

        def load(role: str) -> OnnxPart:
            part = OnnxPart(bundle.path_of(role), plan, threads=threads, role=role.replace("_", " "))
            _check_signature(bundle, role, part)
            return part

        text_encoder = load("text_encoder")
        parts = {"text_encoder": text_encoder}
        pipeline = cls(bundle, parts, tokenizer, lambda: load("text_encoder"), keep_text_encoder=True)
        negative = pipeline.prompts.get("negative", "")
        for mode_prompt in (pipeline.prompts["add"], pipeline.prompts["remove"]):
            pipeline.encode_prompt(mode_prompt, negative, guided=True)
        pipeline.keep_text_encoder = keep_text_encoder
        if not keep_text_encoder:
            del parts["text_encoder"], text_encoder
        for role in ("unet", "vae_encoder", "vae_decoder"):
            parts[role] = load(role)
        pipeline.provider = parts["unet"].active_provider
        notes = {p.provider_note for p in parts.values() if p.provider_note}
        pipeline.provider_note = "; ".join(sorted(notes)) or None
        return pipeline

    # ------------------------------------------------------------------ prompt
    def _text_encoder(self) -> OnnxPart:
        return self.parts.get("text_encoder") or self._load_text_encoder()

    def _after_text_encoder(self, part: OnnxPart) -> None:
        if self.keep_text_encoder:
            self.parts["text_encoder"] = part
        else:
            self.parts.pop("text_encoder", None)

    # ------------------------------------------------------------------ frame
    def prepare_frame(
        self, frame: np.ndarray, mask: np.ndarray, working_size: tuple[int, int] | None = None,
        inpaint_area: str | None = None, region_padding: int | None = None, model_size: int | None = None,
    ) -> PreparedFrame:
        """The model's view of the frame (InpaintingPipeline.prepare_frame), and the masked image VAE-encoded once."""
        prepared = super().prepare_frame(frame, mask, working_size, inpaint_area, region_padding, model_size)
        work_w, work_h = prepared.working_size
        masked_image = prepared.image * (1.0 - prepared.work_mask)
        latent_h, latent_w = work_h // self.vae_scale_factor, work_w // self.vae_scale_factor
        latent_mask = nearest_resize_like_torch(prepared.work_mask, latent_h, latent_w)
        started = time.perf_counter()
        (parameters,) = self.parts["vae_encoder"].run(["latent_parameters"], {"sample": masked_image})
        self.stage_seconds["vae_encoder"] += time.perf_counter() - started
        parameters = parameters.astype(np.float32)
        mean, logvar = np.split(parameters, 2, axis=1)
        std = np.exp(0.5 * np.clip(logvar, -30.0, 20.0))
        prepared.latent_mask = np.ascontiguousarray(latent_mask, dtype=np.float32)
        prepared.posterior_mean = mean
        prepared.posterior_std = std.astype(np.float32)
        return prepared

    # ------------------------------------------------------------------ generation
    def _denoise(
        self,
        prepared: PreparedFrame,
        embeddings: np.ndarray,
        noise: dict[str, np.ndarray],
        steps: int,
        guidance_scale: float,
        scheduler_name: str,
        settings: dict,
        progress: ProgressCallback | None,
        cancel: CancelCheck | None,
    ) -> np.ndarray:
        latents = noise["latents"]
        count = latents.shape[0]
        guided = embeddings.shape[0] == 2
        copies = 2 if guided else 1
        posterior_noise = noise["masked_image_noise"]
        masked_latents = (prepared.posterior_mean + prepared.posterior_std * posterior_noise) * self.vae_scaling_factor
        # Conditioning channels are fixed through the loop: [mask, masked-image latents], uncond half first.
        mask_part = np.repeat(prepared.latent_mask, count * copies, axis=0)
        condition = np.concatenate([mask_part, np.concatenate([masked_latents] * copies)], axis=1).astype(np.float32)
        text = np.repeat(embeddings, count, axis=0)  # [neg × count, pos × count]
        unet = self.parts["unet"]
        timestep_shape = unet.inputs["timestep"].shape

        def predict(model_input: np.ndarray, t) -> np.ndarray:
            timestep = np.full(() if len(timestep_shape) == 0 else (model_input.shape[0],), t)
            feeds = {"sample": np.concatenate([model_input, condition], axis=1), "timestep": timestep,
                     "encoder_hidden_states": text}
            return self.timed_run("unet", unet, ["out_sample"], feeds)[0]

        return self.denoise(latents, steps, scheduler_name, guidance_scale, guided, predict, progress, cancel)


def _check_signature(bundle: Bundle, role: str, part: OnnxPart) -> None:
    manifest = bundle.manifest
    channels = int(manifest["latent_channels"])
    hidden = int(manifest["text_hidden_size"])
    if role == "text_encoder":
        part.expect({"input_ids": (None, None)}, ("last_hidden_state",))
    elif role == "vae_encoder":
        part.expect({"sample": (None, 3, None, None)}, ("latent_parameters",))
    elif role == "vae_decoder":
        part.expect({"latent_sample": (None, channels, None, None)}, ("sample",))
    elif role == "unet":
        part.expect(
            {"sample": (None, None, None, None), "timestep": None, "encoder_hidden_states": (None, None, None)},
            ("out_sample",),
        )
        unet_channels = part.dim("sample", 1)
        expected_channels = 2 * channels + 1
        if isinstance(unet_channels, int) and unet_channels != expected_channels:
            kind = "a text-to-image U-Net" if unet_channels == channels else f"a U-Net with {unet_channels} input channels"
            raise BundleError(
                part.path,
                f"{kind}; an inpainting bundle needs the {expected_channels}-channel U-Net "
                f"({channels} noisy latents + {channels} masked-image latents + 1 mask)",
            )
        unet_hidden = part.dim("encoder_hidden_states", 2)
        if isinstance(unet_hidden, int) and unet_hidden != hidden:
            raise BundleError(part.path, f"the U-Net takes text embeddings of width {unet_hidden}, bundle.json says {hidden}")
