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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.bundle import Bundle, read_bundle
from engine.errors import BundleError
from engine.masks.geometry import nearest_resize_like_torch, resize_mask
from engine.pipelines.diffusion_base import (
    CancelCheck,
    OnnxDiffusionPipeline,
    ProgressCallback,
    given_or_drawn,
)
from engine.pipelines.framing import (
    blend_for_prompt,
    check_frame_and_mask,
    default_feather_px,
    frame_to_model_input,
    model_view,
    paste_back_in_crop,
)
from engine.runtime.providers import plan_providers
from engine.runtime.session import OnnxPart
from engine.text.clip_tokenizer import PromptTokenizer

STAGES = ("text_encoder", "vae_encoder", "unet", "vae_decoder")


@dataclass
class PreparedFrame:
    """A frame and its mask made ready once, for any number of variants."""

    frame: np.ndarray  # uint8 (H, W, 3), original resolution
    mask: np.ndarray  # bool (H, W), original resolution
    working_size: tuple[int, int]  # (w, h) the model sees
    latent_mask: np.ndarray  # float32 (1, 1, h/8, w/8)
    posterior_mean: np.ndarray  # float32 (1, 4, h/8, w/8): VAE posterior of the masked frame
    posterior_std: np.ndarray  # float32 (1, 4, h/8, w/8)
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # (x0, y0, x1, y1) the model sees: the whole frame, or the region
    inpaint_area: str = "frame"


@dataclass
class InpaintResult:
    image: np.ndarray  # uint8 (H, W, 3): the frame with the masked region generated
    raw: np.ndarray  # float32 (h, w, 3) in [0, 1]: the decoded image at working size (what diffusers returns)
    seed: int | None
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0


class InpaintPipeline(OnnxDiffusionPipeline):
    """Load with ``from_bundle``; call with a frame and mask; ``generate_variants`` for several seeds."""

    STAGES = STAGES

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
        path: str | Path,
        provider: str = "auto",
        threads: int | None = None,
        verify_hashes: bool = True,
        keep_text_encoder: bool = False,
    ) -> "InpaintPipeline":
        """Verify and load a bundle. The text encoder runs first, encodes the bundle's default prompts, and is
        released before the U-Net loads (unless ``keep_text_encoder``): a job needs it once, and at full size
        it is 1.4 GB of weights that would otherwise sit beside the U-Net for the whole job. Another prompt
        loads it again for as long as it takes to encode it."""
        bundle = read_bundle(path, verify_hashes=verify_hashes)
        if bundle.kind != "sd-inpaint":
            raise BundleError(bundle.root / "bundle.json", f"kind {bundle.kind!r} is not an inpainting bundle")
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
        inpaint_area: str | None = None, region_padding: int | None = None,
    ) -> PreparedFrame:
        """Resize (the whole frame, or with ``inpaint_area="region"`` the crop around the mask: see
        engine.pipelines.framing.model_view) to working size, and VAE-encode the masked image once."""
        frame, mask = check_frame_and_mask(frame, mask)
        height, width = frame.shape[:2]
        area = inpaint_area or self.defaults.get("inpaint_area", "frame")
        crop, (work_w, work_h) = model_view(width, height, mask, area, region_padding, self.image_size,
                                            self.size_multiple, working_size)
        x0, y0, x1, y1 = crop
        image = frame_to_model_input(np.ascontiguousarray(frame[y0:y1, x0:x1]), work_w, work_h)
        work_mask = resize_mask(mask[y0:y1, x0:x1], work_w, work_h)
        masked_image = image * (~work_mask)[None, None].astype(np.float32)
        latent_h, latent_w = work_h // self.vae_scale_factor, work_w // self.vae_scale_factor
        latent_mask = nearest_resize_like_torch(work_mask.astype(np.float32)[None, None], latent_h, latent_w)
        started = time.perf_counter()
        (parameters,) = self.parts["vae_encoder"].run(["latent_parameters"], {"sample": masked_image})
        self.stage_seconds["vae_encoder"] += time.perf_counter() - started
        parameters = parameters.astype(np.float32)
        mean, logvar = np.split(parameters, 2, axis=1)
        std = np.exp(0.5 * np.clip(logvar, -30.0, 20.0))
        return PreparedFrame(
            frame=frame,
            mask=mask,
            working_size=(work_w, work_h),
            latent_mask=np.ascontiguousarray(latent_mask, dtype=np.float32),
            posterior_mean=mean,
            posterior_std=std.astype(np.float32),
            crop=crop,
            inpaint_area=area,
        )

    # ------------------------------------------------------------------ generation
    def __call__(
        self,
        frame: np.ndarray,
        mask: np.ndarray,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        seed: int | None = 0,
        latents: np.ndarray | None = None,
        masked_image_noise: np.ndarray | None = None,
        working_size: tuple[int, int] | None = None,
        feather_px: int | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        inpaint_area: str | None = None,
        region_padding: int | None = None,
        blend: str | None = None,
    ) -> InpaintResult:
        """One image. ``latents`` / ``masked_image_noise`` (float32, latent shape) replace the noise drawn
        from ``seed`` for the initial latents / the VAE posterior sample, to reproduce diffusers exactly."""
        prepared = self.prepare_frame(frame, mask, working_size, inpaint_area, region_padding)
        return self.generate_variants(
            prepared,
            seeds=[seed],
            prompt=prompt,
            negative_prompt=negative_prompt,
            steps=steps,
            guidance_scale=guidance_scale,
            scheduler=scheduler,
            latents=None if latents is None else [latents],
            masked_image_noise=None if masked_image_noise is None else [masked_image_noise],
            feather_px=feather_px,
            progress=progress,
            cancel=cancel,
            blend=blend,
        )[0]

    def generate_variants(
        self,
        prepared: PreparedFrame,
        seeds: Sequence[int | None],
        prompt: str | None = None,
        negative_prompt: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        latents: Sequence[np.ndarray] | None = None,
        masked_image_noise: Sequence[np.ndarray] | None = None,
        feather_px: int | None = None,
        batch_size: int = 1,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        blend: str | None = None,
    ) -> list[InpaintResult]:
        """Variants of one prepared frame, one per seed, `batch_size` of them per U-Net call.

        Each variant's noise comes from its own seed, so a variant's bytes do not depend on the batch size.
        ``blend``: "feather" or "poisson" (engine.pipelines.blending); None: Poisson for the removal prompt.
        """
        prompt = self.prompts["add"] if prompt is None else prompt
        negative_prompt = self.prompts.get("negative", "") if negative_prompt is None else negative_prompt
        steps, guidance_scale, scheduler = self.sampling_settings(steps, guidance_scale, scheduler, batch_size)
        work_w, work_h = prepared.working_size
        if feather_px is None:
            feather_px = default_feather_px(prepared.frame.shape[1], prepared.frame.shape[0])
        blend = blend_for_prompt(prompt, self.prompts.get("remove")) if blend is None else blend
        guided = guidance_scale > 1.0
        embeddings = self.encode_prompt(prompt, negative_prompt, guided)
        latent_shape = (1, self.latent_channels, work_h // self.vae_scale_factor, work_w // self.vae_scale_factor)
        settings = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "scheduler": scheduler,
            "working_size": [work_w, work_h],
            "feather_px": feather_px,
            "blend": blend,
            "inpaint_area": prepared.inpaint_area,
            "region_crop": list(prepared.crop),
        }

        results: list[InpaintResult] = []
        for start in range(0, len(seeds), batch_size):
            chunk = range(start, min(start + batch_size, len(seeds)))
            started = time.perf_counter()
            initial, posterior_noise = [], []
            for index in chunk:
                rng = np.random.default_rng(seeds[index])
                initial.append(given_or_drawn(latents, index, rng, latent_shape, "latents"))
                posterior_noise.append(given_or_drawn(masked_image_noise, index, rng, latent_shape, "masked_image_noise"))
            final_latents = self._denoise(
                prepared,
                embeddings,
                np.concatenate(initial),
                np.concatenate(posterior_noise),
                steps,
                guidance_scale,
                scheduler,
                progress,
                cancel,
            )
            decoded = self.decode(final_latents)
            per_image = (time.perf_counter() - started) / len(chunk)
            for offset, index in enumerate(chunk):
                raw = decoded[offset]
                image = paste_back_in_crop(prepared.frame, raw, prepared.mask, feather_px, prepared.crop, blend)
                results.append(
                    InpaintResult(image=image, raw=raw, seed=seeds[index], settings=dict(settings), seconds=per_image)
                )
        return results

    def _denoise(
        self,
        prepared: PreparedFrame,
        embeddings: np.ndarray,
        latents: np.ndarray,
        posterior_noise: np.ndarray,
        steps: int,
        guidance_scale: float,
        scheduler_name: str,
        progress: ProgressCallback | None,
        cancel: CancelCheck | None,
    ) -> np.ndarray:
        count = latents.shape[0]
        guided = embeddings.shape[0] == 2
        copies = 2 if guided else 1
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
