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

import numpy as np

from engine.bundle import Bundle
from engine.errors import InputError
from engine.pipelines.diffusion_base import (
    CancelCheck,
    InpaintingPipeline,
    PreparedFrame,
    ProgressCallback,
)
from engine.pipelines.framing import decoded_to_image
from engine.runtime.opening import BundleSource
from engine.runtime.providers import plan_providers
from engine.runtime.session import OnnxPart

STAGES = ("unet",)


class CompactInpaintPipeline(InpaintingPipeline):
    KIND = "pixel-inpaint"
    REFUSAL = "a pixel-inpaint bundle"
    STAGES = STAGES
    STARTS_FROM_FRAME = True
    DEFAULT_INPAINT_AREA = "region"

    def __init__(self, bundle: Bundle, parts: dict[str, OnnxPart]):
        super().__init__(bundle, parts, tokenizer=None)
        self.classes = list(bundle.manifest["classes"])

    @classmethod
    def from_bundle(cls, source: BundleSource, provider: str = "auto", threads: int | None = None,
                    verify_hashes: bool = True) -> CompactInpaintPipeline:
        bundle = cls.read(source, verify_hashes)
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

    def default_negative_prompt(self) -> str:
        """Empty, whatever the bundle says: the compact models guide against the unconditional class, not a text."""
        return ""

    # ------------------------------------------------------------------ generation
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Pixel space: the denoised sample is the image."""
        return decoded_to_image(latents)

    @staticmethod
    def _batch_condition(prepared: PreparedFrame, labels: np.ndarray, count: int) -> tuple[bool, np.ndarray, np.ndarray]:
        """(guided, masked frame + mask repeated for every variant and guidance copy, class labels in the same
        order: [uncond × count, cond × count] when guided)."""
        guided = labels.shape[0] == 2
        copies = 2 if guided else 1
        masked = prepared.image * (1.0 - prepared.work_mask)
        condition = np.repeat(np.concatenate([masked, prepared.work_mask], axis=1), count * copies, axis=0).astype(np.float32)
        return guided, condition, np.repeat(labels, count)

    def _denoise(self, prepared: PreparedFrame, labels: np.ndarray, noise: dict[str, np.ndarray], steps: int,
                 guidance_scale: float, scheduler_name: str, settings: dict, progress: ProgressCallback | None,
                 cancel: CancelCheck | None) -> np.ndarray:
        latents = noise["latents"]
        guided, condition, class_labels = self._batch_condition(prepared, labels, latents.shape[0])
        unet = self.parts["unet"]

        def predict(model_input: np.ndarray, t) -> np.ndarray:
            feeds = {"sample": np.concatenate([model_input, condition], axis=1),
                     "timestep": np.full((model_input.shape[0],), t, dtype=np.float32), "class_labels": class_labels}
            return self.timed_run("unet", unet, ["out_sample"], feeds)[0]

        strength = settings.get("strength")
        return self.denoise(latents, steps, scheduler_name, guidance_scale, guided, predict, progress, cancel,
                            start=None if strength is None else prepared.image, strength=strength or 1.0)
