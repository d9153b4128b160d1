"""CCIS-Diff controlled generation on onnxruntime: mask + clinical text → image, through an "sd-controlnet"
bundle (SD-1.5 text-to-image U-Net taking a ControlNet's residuals as inputs). No torch.

A call reads top to bottom: check inputs → encode prompt (cached per prompt pair) → prepare the mask once
(working size, the control image: the mask as a 0/1 image of the ControlNet's conditioning channels) → per
batch of variants: draw initial noise from each variant's seed, denoise (ControlNet then U-Net each step;
progress and cancel each step) → decode → either the whole generated image at the mask's resolution, or,
when a frame is given, only the masked region pasted back into it (engine.pipelines.framing.paste_back:
every pixel outside the mask is the frame's own byte).

The maths is diffusers' StableDiffusionControlNetPipeline (guess_mode off, guidance window 0–1): classifier-
free guidance runs [negative, prompt] as one batch with the control image repeated for both halves, the
ControlNet sees the same (scaled) latents as the U-Net, its residuals are multiplied by the conditioning
scale and added inside the U-Net. The bundle's defaults are the paper's: DDIM, 20 steps, CFG 7.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.bundle import Bundle
from engine.errors import BundleError, InputError
from engine.masks.geometry import binarize, resize_mask
from engine.pipelines.diffusion_base import (
    CancelCheck,
    OnnxDiffusionPipeline,
    ProgressCallback,
    VariantResult,
    check_controlnet_section,
)
from engine.pipelines.framing import check_frame, choose_working_size, paste_back
from engine.runtime.opening import BundleSource
from engine.runtime.providers import plan_providers
from engine.runtime.session import OnnxPart
from engine.text.clip_tokenizer import PromptTokenizer

KIND = "sd-controlnet"
STAGES = ("text_encoder", "controlnet", "unet", "vae_decoder")


@dataclass
class PreparedMask:
    """A mask (and optionally the frame to paste into) made ready once, for any number of variants."""

    mask: np.ndarray  # bool (H, W), original resolution
    frame: np.ndarray | None  # uint8 (H, W, 3) to paste the masked region into, or None: the whole image
    working_size: tuple[int, int]  # (w, h) the model sees
    control: np.ndarray  # float32 (1, C, h, w) in {0, 1}: the ControlNet's condition


class ControlNetPipeline(OnnxDiffusionPipeline):
    """Load with ``from_bundle``; call with a mask and a prompt; ``generate_variants`` for several seeds."""

    KIND = KIND
    REFUSAL = f"an {KIND} bundle"
    STAGES = STAGES
    PROMPT_CACHE_SIZE = 64  # captions: a prompt per frame

    def __init__(self, bundle: Bundle, parts: dict[str, OnnxPart], tokenizer: PromptTokenizer):
        super().__init__(bundle, parts, tokenizer)
        manifest = bundle.manifest
        self.residual_names = list(manifest["controlnet"]["residuals"])
        self.conditioning_channels = int(manifest["controlnet"].get("conditioning_channels", 3))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_bundle(
        cls, source: BundleSource, provider: str = "auto", threads: int | None = None, verify_hashes: bool = True
    ) -> ControlNetPipeline:
        """Verify (unless ``source`` is a Bundle already read) and load an sd-controlnet bundle. The text encoder
        stays loaded: prompts change per frame (captions), and SD-1.5's text encoder is small beside its U-Net."""
        bundle = cls.read(source, verify_hashes)
        check_controlnet_section(bundle, cls.REFUSAL)
        manifest = bundle.manifest
        plan = plan_providers(provider, fp16=manifest["precision"] == "fp16")
        tok = manifest["tokenizer"]
        tokenizer = PromptTokenizer(bundle.path_of("tokenizer"), tok["max_length"], tok["pad_token_id"], tok["eos_token_id"])
        parts = {}
        for role in STAGES:
            part = OnnxPart(bundle.path_of(role), plan, threads=threads, role=role.replace("_", " "))
            _check_signature(bundle, role, part)
            parts[role] = part
        return cls(bundle, parts, tokenizer)

    # ------------------------------------------------------------------ mask
    def prepare(
        self, mask: np.ndarray, frame: np.ndarray | None = None, working_size: tuple[int, int] | None = None
    ) -> PreparedMask:
        """The control image at working size; with `frame`, results are pasted into it inside the mask."""
        mask = binarize(mask)
        height, width = mask.shape
        if frame is not None:
            frame = check_frame(frame)
            if frame.shape[:2] != mask.shape:
                raise InputError(f"mask is {width}×{height} but the frame is {frame.shape[1]}×{frame.shape[0]}")
        if not mask.any():
            raise InputError("mask is empty: nothing to generate")
        if working_size is None:
            working_size = choose_working_size(width, height, self.image_size, self.size_multiple)
        work_w, work_h = working_size
        if work_w % self.size_multiple or work_h % self.size_multiple:
            raise InputError(f"working size {work_w}×{work_h} is not a multiple of {self.size_multiple}")
        work_mask = resize_mask(mask, work_w, work_h).astype(np.float32)
        control = np.repeat(work_mask[None, None], self.conditioning_channels, axis=1)
        return PreparedMask(mask=mask, frame=frame, working_size=(work_w, work_h), control=np.ascontiguousarray(control))

    def prepare_frame(self, frame: np.ndarray, mask: np.ndarray, working_size: tuple[int, int] | None = None,
                      inpaint_area: str | None = None, region_padding: int | None = None,
                      model_size: int | None = None) -> PreparedMask:
        """InpaintPipeline's name for it: the mask, with paste-back into `frame` (whole-frame only)."""
        if inpaint_area not in (None, "frame"):
            raise InputError(f"inpaint area {inpaint_area!r}: an sd-controlnet bundle generates the whole frame; "
                             "region inpainting needs an inpainting bundle (sd-inpaint or pixel-inpaint)")
        if working_size is None and model_size is not None:
            working_size = choose_working_size(mask.shape[1], mask.shape[0], model_size, self.size_multiple)
        return self.prepare(mask, frame=frame, working_size=working_size)

    # ------------------------------------------------------------------ generation
    def __call__(
        self,
        mask: np.ndarray,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        frame: np.ndarray | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        seed: int | None = 0,
        latents: np.ndarray | None = None,
        working_size: tuple[int, int] | None = None,
        feather_px: int | None = None,
        conditioning_scale: float = 1.0,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> VariantResult:
        """One image. ``latents`` (float32, latent shape) replaces the noise drawn from ``seed``."""
        prepared = self.prepare(mask, frame=frame, working_size=working_size)
        return self.generate_variants(
            prepared, seeds=[seed], prompt=prompt, negative_prompt=negative_prompt, steps=steps,
            guidance_scale=guidance_scale, scheduler=scheduler, latents=None if latents is None else [latents],
            feather_px=feather_px, conditioning_scale=conditioning_scale, progress=progress, cancel=cancel,
        )[0]

    def variant_settings(self, prepared: PreparedMask, prompt: str, feather_px: int, blend: str | None,
                         conditioning_scale: float) -> dict:
        """The settings of a variant; ``blend`` is not this pipeline's (it pastes back with a feathered edge)."""
        return {"conditioning_scale": float(conditioning_scale), "working_size": list(prepared.working_size),
                "feather_px": feather_px, "paste_back": prepared.frame is not None}

    def finish(self, prepared: PreparedMask, raw: np.ndarray, settings: dict) -> np.ndarray:
        """The masked region pasted into the frame, or without a frame the whole image at the mask's size."""
        if prepared.frame is not None:
            return paste_back(prepared.frame, raw, prepared.mask, settings["feather_px"])
        height, width = prepared.mask.shape
        return _to_size(raw, width, height)

    def _denoise(self, prepared: PreparedMask, embeddings: np.ndarray, noise: dict[str, np.ndarray], steps: int,
                 guidance_scale: float, scheduler_name: str, settings: dict, progress: ProgressCallback | None,
                 cancel: CancelCheck | None) -> np.ndarray:
        latents = noise["latents"]
        conditioning_scale = settings["conditioning_scale"]
        count = latents.shape[0]
        guided = embeddings.shape[0] == 2
        copies = 2 if guided else 1
        control = np.repeat(prepared.control, count * copies, axis=0)
        text = np.repeat(embeddings, count, axis=0)  # [neg × count, pos × count]
        controlnet, unet = self.parts["controlnet"], self.parts["unet"]

        def predict(model_input: np.ndarray, t) -> np.ndarray:
            timestep = np.asarray(t, dtype=np.float32).reshape(())
            residuals = self.timed_run("controlnet", controlnet, self.residual_names, {
                "sample": model_input, "timestep": timestep, "encoder_hidden_states": text, "controlnet_cond": control,
            })
            if conditioning_scale != 1.0:
                residuals = [r * np.float32(conditioning_scale) for r in residuals]
            feeds = {"sample": model_input, "timestep": timestep, "encoder_hidden_states": text}
            feeds.update({name: r.astype(np.float32) for name, r in zip(self.residual_names, residuals)})
            return self.timed_run("unet", unet, ["out_sample"], feeds)[0]

        return self.denoise(latents, steps, scheduler_name, guidance_scale, guided, predict, progress, cancel)


def _to_size(raw: np.ndarray, width: int, height: int) -> np.ndarray:
    """float [0, 1] (h, w, 3) → uint8 (height, width, 3), Lanczos as paste_back resizes."""
    image = np.clip(np.rint(raw * 255.0), 0, 255).astype(np.uint8)
    if image.shape[:2] != (height, width):
        image = np.asarray(Image.fromarray(image).resize((width, height), resample=Image.Resampling.LANCZOS))
    return image


def _check_signature(bundle: Bundle, role: str, part: OnnxPart) -> None:
    manifest = bundle.manifest
    channels = int(manifest["latent_channels"])
    hidden = int(manifest["text_hidden_size"])
    residuals = tuple(manifest["controlnet"]["residuals"])
    latent_inputs = {"sample": (None, None, None, None), "timestep": None, "encoder_hidden_states": (None, None, None)}
    if role == "text_encoder":
        part.expect({"input_ids": (None, None)}, ("last_hidden_state",))
    elif role == "vae_decoder":
        part.expect({"latent_sample": (None, channels, None, None)}, ("sample",))
    elif role == "controlnet":
        part.expect({**latent_inputs, "controlnet_cond": (None, None, None, None)}, residuals)
    elif role == "unet":
        part.expect({**latent_inputs, **{name: (None, None, None, None) for name in residuals}}, ("out_sample",))
        unet_channels = part.dim("sample", 1)
        if isinstance(unet_channels, int) and unet_channels != channels:
            raise BundleError(
                part.path,
                f"a U-Net with {unet_channels} input channels; an sd-controlnet bundle needs the {channels}-channel "
                "text-to-image U-Net (an inpainting U-Net belongs in an sd-inpaint bundle)",
            )
    if role in ("unet", "controlnet"):
        unet_hidden = part.dim("encoder_hidden_states", 2)
        if isinstance(unet_hidden, int) and unet_hidden != hidden:
            raise BundleError(part.path, f"takes text embeddings of width {unet_hidden}, bundle.json says {hidden}")
