"""A compact CCIS ControlNet on onnxruntime: a "pixel-controlnet" bundle (engine.export.compact_controlnet_export),
no torch. Frame + mask + prompt (the frame's clinical caption) → the frame with a polyp painted in the mask.

It is the compact pipeline (engine.pipelines.compact: region crop around the mask, pixel-space DDIM, paste-back
that keeps every byte outside the mask) with two more parts per step: the prompt is tokenised by the bundle's
word vocabulary and encoded once (cached per prompt), and each step runs the ControlNet (residuals from the
noisy input, class label and text tokens) before the U-Net, which adds them to its skips and mid output.
Classifier-free guidance runs (unconditional class, the negative prompt — "" by default) and (Polyp, the prompt)
as one batch, unconditional half first: the maths of engine.training.ccis_compact_task.sample_controlled.

The pipeline gets a prompt string and knows nothing of caption files: the batch job looks the caption up
(engine.jobs.runner.frame_tasks) and passes it as the prompt, as it does for an sd-controlnet bundle.
"""

from __future__ import annotations

import numpy as np

from engine.bundle import Bundle
from engine.pipelines.compact import CompactInpaintPipeline
from engine.pipelines.diffusion_base import (
    CancelCheck,
    PreparedFrame,
    ProgressCallback,
    check_controlnet_section,
)
from engine.runtime.opening import BundleSource
from engine.runtime.providers import plan_providers
from engine.runtime.session import OnnxPart
from engine.text.word_tokenizer import WordTokenizer

KIND = "pixel-controlnet"
STAGES = ("text_encoder", "controlnet", "unet")


class CompactControlNetPipeline(CompactInpaintPipeline):
    KIND = KIND
    REFUSAL = f"a {KIND} bundle"
    STAGES = STAGES
    STARTS_FROM_FRAME = False  # its _denoise draws from pure noise only
    GUIDANCE_INTERVALS = False  # and guides every step
    PROMPT_CACHE_SIZE = 64  # captions: a prompt per frame

    def __init__(self, bundle: Bundle, parts: dict[str, OnnxPart], tokenizer: WordTokenizer):
        super().__init__(bundle, parts)
        self.tokenizer = tokenizer
        self.residual_names = list(bundle.manifest["controlnet"]["residuals"])
        self.polyp_class = int(bundle.manifest["controlnet"].get("class_label", 1))

    @classmethod
    def from_bundle(cls, source: BundleSource, provider: str = "auto", threads: int | None = None,
                    verify_hashes: bool = True) -> CompactControlNetPipeline:
        bundle = cls.read(source, verify_hashes)
        check_controlnet_section(bundle, cls.REFUSAL)
        manifest = bundle.manifest
        tokenizer = WordTokenizer.from_file(bundle.path_of("vocab"))
        plan = plan_providers(provider, fp16=manifest["precision"] == "fp16")
        residuals = tuple(manifest["controlnet"]["residuals"])
        channels = 2 * int(manifest["image_channels"]) + 1
        hidden = int(manifest["text_hidden_size"])
        inputs = {"sample": (None, channels, None, None), "timestep": (None,), "class_labels": (None,)}
        parts = {
            "text_encoder": OnnxPart(bundle.path_of("text_encoder"), plan, threads=threads, role="text encoder"),
            "controlnet": OnnxPart(bundle.path_of("controlnet"), plan, threads=threads, role="ControlNet"),
            "unet": OnnxPart(bundle.path_of("unet"), plan, threads=threads, role="U-Net"),
        }
        parts["text_encoder"].expect({"input_ids": (None, tokenizer.max_length)}, ("last_hidden_state",))
        parts["controlnet"].expect({**inputs, "encoder_hidden_states": (None, tokenizer.max_length, hidden)}, residuals)
        parts["unet"].expect({**inputs, **{n: (None, None, None, None) for n in residuals}}, ("out_sample",))
        return cls(bundle, parts, tokenizer)

    # ------------------------------------------------------------------ prompt
    def encode_prompt(self, prompt: str, negative_prompt: str = "", guided: bool = True):
        """(class labels, text tokens): [unconditional, Polyp] and the tokens of [negative, prompt] when guided,
        else [Polyp] and [prompt]. The text tokens are cached per prompt pair (OnnxDiffusionPipeline)."""
        text = super(CompactInpaintPipeline, self).encode_prompt(prompt, negative_prompt, guided)
        labels = np.array([0, self.polyp_class] if guided else [self.polyp_class], dtype=np.int64)
        return labels, text

    def unknown_words(self, prompt: str) -> list[str]:
        """The prompt's words the vocabulary lacks (they reach the model as <unk>)."""
        return self.tokenizer.unknown_words(prompt)

    # ------------------------------------------------------------------ generation
    def _denoise(self, prepared: PreparedFrame, encoded, noise: dict[str, np.ndarray], steps: int,
                 guidance_scale: float, scheduler_name: str, settings: dict, progress: ProgressCallback | None,
                 cancel: CancelCheck | None) -> np.ndarray:
        labels, text = encoded
        latents = noise["latents"]
        count = latents.shape[0]
        guided, condition, class_labels = self._batch_condition(prepared, labels, count)
        tokens = np.repeat(text, count, axis=0).astype(np.float32)
        controlnet, unet = self.parts["controlnet"], self.parts["unet"]

        def predict(model_input: np.ndarray, t) -> np.ndarray:
            sample = np.concatenate([model_input, condition], axis=1)
            feeds = {"sample": sample, "timestep": np.full((model_input.shape[0],), t, dtype=np.float32),
                     "class_labels": class_labels}
            residuals = self.timed_run("controlnet", controlnet, self.residual_names,
                                       {**feeds, "encoder_hidden_states": tokens})
            feeds.update({name: r.astype(np.float32) for name, r in zip(self.residual_names, residuals)})
            return self.timed_run("unet", unet, ["out_sample"], feeds)[0]

        return self.denoise(latents, steps, scheduler_name, guidance_scale, guided, predict, progress, cancel)

