"""The compact polyp model on onnxruntime: a "pixel-inpaint" bundle (engine.export.compact_export), no torch.

A call reads top to bottom: check inputs → the prompt to its class label ("Polyp", "Normal"; the unconditional
class for guidance) → prepare the frame once (by default the region around the mask: crop, resize to working
size; or the whole frame) → per variant: draw the initial noise from its seed, denoise in pixel space (the U-Net
predicts v; DDIM or DPM-Solver++ from the bundle's scheduler config; progress and cancel each step) → paste the
masked region back into the original frame. Every pixel outside the mask keeps its byte.

The maths equals engine.training.compact_task.sample_inpaint (diffusers' DDIMScheduler driving the torch model)
on the same noise: the U-Net input is [noisy image, image · (1 − mask), mask], classifier-free guidance runs the
unconditional and conditional labels as one batch (unconditional half first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.bundle import Bundle, read_bundle
from engine.errors import BundleError, InputError
from engine.masks.geometry import resize_mask
from engine.pipelines.diffusion_base import CancelCheck, OnnxDiffusionPipeline, ProgressCallback, given_or_drawn
from engine.pipelines.framing import (
    blend_for_prompt,
    check_frame_and_mask,
    decoded_to_image,
    default_feather_px,
    frame_to_model_input,
    model_view,
    paste_back_in_crop,
)
from engine.pipelines.inpaint import InpaintResult
from engine.runtime.providers import plan_providers
from engine.runtime.session import OnnxPart

STAGES = ("unet",)


@dataclass
class PreparedRegion:
    """A frame and its mask made ready once, for any number of variants."""

    frame: np.ndarray  # uint8 (H, W, 3), original resolution
    mask: np.ndarray  # bool (H, W), original resolution
    crop: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the frame the model sees (the whole frame in frame mode)
    inpaint_area: str
    working_size: tuple[int, int]  # (w, h)
    image: np.ndarray  # float32 (1, 3, h, w) in [-1, 1]
    work_mask: np.ndarray  # float32 (1, 1, h, w) in {0, 1}


class CompactInpaintPipeline(OnnxDiffusionPipeline):
    STAGES = STAGES

    def __init__(self, bundle: Bundle, parts: dict[str, OnnxPart]):
        super().__init__(bundle, parts, tokenizer=None)
        self.classes = list(bundle.manifest["classes"])

    @classmethod
    def from_bundle(cls, path: str | Path, provider: str = "auto", threads: int | None = None,
                    verify_hashes: bool = True) -> "CompactInpaintPipeline":
        bundle = read_bundle(path, verify_hashes=verify_hashes)
        if bundle.kind != "pixel-inpaint":
            raise BundleError(bundle.root / "bundle.json", f"kind {bundle.kind!r} is not a pixel-inpaint bundle")
        plan = plan_providers(provider, fp16=bundle.manifest["precision"] == "fp16")
        unet = OnnxPart(bundle.path_of("unet"), plan, threads=threads, role="U-Net")
        channels = int(bundle.manifest["image_channels"])
        unet.expect({"sample": (None, 2 * channels + 1, None, None), "timestep": (None,), "class_labels": (None,)},
                    ("out_sample",))
        return cls(bundle, {"unet": unet})

    # ------------------------------------------------------------------ prompt
    def class_of(self, prompt: str) -> int:
        for index, name in enumerate(self.classes):
            if name and name.lower() == prompt.strip().lower():
                return index
        known = " and ".join(repr(c) for c in self.classes if c)
        raise InputError(f"the compact model {self.bundle.name!r} knows the prompts {known}, not {prompt!r} "
                         "(it has no text encoder; use an sd-inpaint bundle for free text)")

    def encode_prompt(self, prompt: str, negative_prompt: str = "", guided: bool = True) -> np.ndarray:
        """Class labels [unconditional, prompt] when guided, else [prompt] (int64): this model's "embeddings"."""
        if negative_prompt:
            raise InputError(f"the compact model {self.bundle.name!r} takes no negative prompt (got {negative_prompt!r})")
        label = self.class_of(prompt)
        return np.array([0, label] if guided else [label], dtype=np.int64)

    # ------------------------------------------------------------------ frame
    def prepare_frame(self, frame: np.ndarray, mask: np.ndarray, working_size: tuple[int, int] | None = None,
                      inpaint_area: str | None = None, region_padding: int | None = None) -> PreparedRegion:
        frame, mask = check_frame_and_mask(frame, mask)
        height, width = frame.shape[:2]
        area = inpaint_area or self.defaults.get("inpaint_area", "region")
        crop, (work_w, work_h) = model_view(width, height, mask, area, region_padding, self.image_size,
                                            self.size_multiple, working_size)
        x0, y0, x1, y1 = crop
        image = frame_to_model_input(np.ascontiguousarray(frame[y0:y1, x0:x1]), work_w, work_h)
        work_mask = resize_mask(mask[y0:y1, x0:x1], work_w, work_h).astype(np.float32)[None, None]
        return PreparedRegion(frame=frame, mask=mask, crop=crop, inpaint_area=area, working_size=(work_w, work_h),
                              image=image.astype(np.float32), work_mask=work_mask)

    # ------------------------------------------------------------------ generation
    def __call__(self, frame: np.ndarray, mask: np.ndarray, prompt: str | None = None, negative_prompt: str | None = None,
                 steps: int | None = None, guidance_scale: float | None = None, scheduler: str | None = None,
                 seed: int | None = 0, latents: np.ndarray | None = None, working_size=None, inpaint_area=None,
                 region_padding=None, feather_px: int | None = None, progress: ProgressCallback | None = None,
                 cancel: CancelCheck | None = None, blend: str | None = None) -> InpaintResult:
        prepared = self.prepare_frame(frame, mask, working_size, inpaint_area, region_padding)
        return self.generate_variants(prepared, [seed], prompt=prompt, negative_prompt=negative_prompt, steps=steps,
                                      guidance_scale=guidance_scale, scheduler=scheduler,
                                      latents=None if latents is None else [latents], feather_px=feather_px,
                                      progress=progress, cancel=cancel, blend=blend)[0]

    def generate_variants(self, prepared: PreparedRegion, seeds: Sequence[int | None], prompt: str | None = None,
                          negative_prompt: str | None = None, steps: int | None = None,
                          guidance_scale: float | None = None, scheduler: str | None = None,
                          latents: Sequence[np.ndarray] | None = None, feather_px: int | None = None,
                          batch_size: int = 1, progress: ProgressCallback | None = None,
                          cancel: CancelCheck | None = None, masked_image_noise=None,
                          blend: str | None = None) -> list[InpaintResult]:
        """Variants of one prepared frame, one per seed (``latents`` = explicit initial noise, image-shaped).
        ``blend``: "feather" or "poisson" (engine.pipelines.blending); None: Poisson for the removal prompt."""
        prompt = self.prompts["add"] if prompt is None else prompt
        negative_prompt = "" if negative_prompt is None else negative_prompt
        steps, guidance_scale, scheduler = self.sampling_settings(steps, guidance_scale, scheduler, batch_size)
        guided = guidance_scale > 1.0
        labels = self.encode_prompt(prompt, negative_prompt, guided)
        work_w, work_h = prepared.working_size
        if feather_px is None:
            feather_px = default_feather_px(prepared.frame.shape[1], prepared.frame.shape[0])
        blend = blend_for_prompt(prompt, self.prompts.get("remove")) if blend is None else blend
        shape = (1, 3, work_h, work_w)
        settings = {"prompt": prompt, "negative_prompt": negative_prompt, "steps": steps,
                    "guidance_scale": guidance_scale, "scheduler": scheduler, "working_size": [work_w, work_h],
                    "feather_px": feather_px, "blend": blend, "inpaint_area": prepared.inpaint_area,
                    "region_crop": list(prepared.crop)}
        results = []
        for start in range(0, len(seeds), batch_size):
            chunk = range(start, min(start + batch_size, len(seeds)))
            started = time.perf_counter()
            initial = [given_or_drawn(latents, i, np.random.default_rng(seeds[i]), shape, "latents") for i in chunk]
            final = self._denoise(prepared, labels, np.concatenate(initial), steps, guidance_scale, scheduler, progress, cancel)
            decoded = decoded_to_image(final)
            per_image = (time.perf_counter() - started) / len(chunk)
            for offset, index in enumerate(chunk):
                raw = decoded[offset]
                image = paste_back_in_crop(prepared.frame, raw, prepared.mask, feather_px, prepared.crop, blend)
                results.append(InpaintResult(image=image, raw=raw, seed=seeds[index], settings=dict(settings), seconds=per_image))
        return results

    @staticmethod
    def _batch_condition(prepared: PreparedRegion, labels: np.ndarray, count: int) -> tuple[bool, np.ndarray, np.ndarray]:
        """(guided, masked frame + mask repeated for every variant and guidance copy, class labels in the same
        order: [uncond × count, cond × count] when guided)."""
        guided = labels.shape[0] == 2
        copies = 2 if guided else 1
        masked = prepared.image * (1.0 - prepared.work_mask)
        condition = np.repeat(np.concatenate([masked, prepared.work_mask], axis=1), count * copies, axis=0).astype(np.float32)
        return guided, condition, np.repeat(labels, count)

    def _denoise(self, prepared: PreparedRegion, labels: np.ndarray, noise: np.ndarray, steps: int,
                 guidance_scale: float, scheduler_name: str, progress, cancel) -> np.ndarray:
        count = noise.shape[0]
        guided, condition, class_labels = self._batch_condition(prepared, labels, count)
        unet = self.parts["unet"]

        def predict(model_input: np.ndarray, t) -> np.ndarray:
            feeds = {"sample": np.concatenate([model_input, condition], axis=1),
                     "timestep": np.full((model_input.shape[0],), t, dtype=np.float32), "class_labels": class_labels}
            return self.timed_run("unet", unet, ["out_sample"], feeds)[0]

        return self.denoise(noise, steps, scheduler_name, guidance_scale, guided, predict, progress, cancel)
