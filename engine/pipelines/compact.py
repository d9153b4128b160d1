"""The compact polyp model on onnxruntime: a "pixel-inpaint" bundle (engine.export.compact_export), no torch.

A call reads top to bottom: check inputs → the prompt to its class label ("Polyp", "Normal"; the unconditional
class for guidance) → prepare the frame once (by default the region around the mask: crop, resize to working
size; or the whole frame) → per variant: draw the initial noise from its seed, denoise in pixel space (the U-Net
predicts v; DDIM or DPM-Solver++ from the bundle's scheduler config; progress and cancel each step) → paste the
masked region back into the original frame. Every pixel outside the mask keeps its byte.

The maths equals engine.training.compact_task.sample_inpaint (diffusers' DDIMScheduler driving the torch model)
on the same noise: the U-Net input is [noisy image, image · (1 − mask), mask], classifier-free guidance runs the
unconditional and conditional labels as one batch (unconditional half first).

The detail stage (a bundle with the optional "detail" part, engine.models.detail_unet): when the region crop's
longer side exceeds the bundle's ``min_region_side``, the base's result (inside the mask; the real view outside)
is brought up ``scale``× (``upsampled_condition``), noised to the bundle's conditioning level, and a second U-Net
repaints the region at that size in a few unguided DDIM steps, seeing it, the masked crop at that size and the
mask; the paste-back then takes the larger picture. Its noise is drawn from a generator seeded by the variant's
initial noise, so a variant's bytes still depend on its seed only. It equals
engine.training.detail_task.sample_detail. A bundle without the part runs exactly as before.

Attributes (a bundle with an "attributes" section, from a model trained with them: engine.export.compact_export):
the U-Net takes one index per attribute beside the class label (0 = not asked). A variant asked {name: value}
feeds those indices with its conditional half and all zeros with its unconditional one, so guidance pushes
towards what was asked; the removal prompt ("Normal") feeds zeros whatever is asked. The indices fed are in the
variant's settings ("attribute_indices", with the words in "attributes"). A bundle without the section runs
exactly as before, and asking it for attributes is an InputError.

Attribute guidance (``attribute_guidance`` A, recorded in the settings when something is asked): the asked
attributes get a guidance of their own, apart from the label's G — three predictions a step, unconditional u, the
label without attributes c₀ and with them c_a, combined as u + G·(c₀ − u) + A·(c_a − c₀) (compositional guidance;
the model was trained with each attribute dropped on its own, so c₀ is a prediction it knows). At A = G this is the
guided pair's u + G·(c_a − u); at A = 0 the label alone. It runs on the first ``attribute_guidance_until`` share
of the steps (the noisiest, where colour and surface are decided; ATTRIBUTE_GUIDANCE_UNTIL unless given, recorded
beside A) and the guided pair [u, c_a] on the rest, so it costs half again the U-Net's time on those steps only.

A guidance interval (``guidance_interval`` (A, B), engine.pipelines.guidance): the guidance above runs from the A to
the B share of the steps only (attribute guidance on the first ``attribute_guidance_until`` of those), and the
fully conditioned prediction alone on the others — one U-Net prediction a step there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
from PIL import Image

from engine.bundle import Bundle
from engine.errors import BundleError, InputError
from engine.masks.geometry import resize_mask
from engine.pipelines.diffusion_base import (
    CancelCheck,
    InpaintingPipeline,
    PreparedFrame,
    ProgressCallback,
)
from engine.pipelines.guidance import Guide, attribute_guidance_share, classifier_free, unguided
from engine.pipelines.attribute_inputs import (
    ATTRIBUTES,
    attribute_indices,
    bundle_attribute_values,
    check_asked_attributes,
)
from engine.pipelines.framing import decoded_to_image, frame_to_model_input
from engine.runtime.opening import BundleSource
from engine.runtime.providers import plan_providers
from engine.runtime.session import OnnxPart
from engine.schedulers import make_scheduler

STAGES = ("unet",)
DETAIL_STAGE = "detail"
REMOVAL_CLASS = "Normal"
# The detail stage runs on region crops whose longer side is above this (px): a smaller crop's base result at
# 64² already has about its own resolution. The exporter writes it into the bundle's "detail" section.
DETAIL_MIN_REGION_SIDE = 96
# Attribute guidance runs on this share of the sampling steps, the noisiest (then the guided pair). Measured on the
# rare-attribute model at A = 5 (docs/compact-model.md, "Attribute guidance on the noisiest half"): every asked
# colour and surface still reads back ≥ 2× chance, and a median-size polyp takes 0.90 s instead of 1.05–1.4 s.
ATTRIBUTE_GUIDANCE_UNTIL = 0.5


def upsampled_condition(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The detail stage's low-resolution input: uint8 (h, w, 3) brought to ``size`` (w, h) bicubic, as float32
    (3, H, W) in [-1, 1]. Training (on real crops brought down) and the engine (on the base's result) share it."""
    resized = np.asarray(Image.fromarray(image).resize(size, resample=Image.Resampling.BICUBIC))
    return (resized.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def detail_noise(initial_noise: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(sampling noise, conditioning noise) of one variant's detail stage, each of ``shape``, from a generator
    seeded by the variant's initial noise (its seed, or the latents given for it)."""
    digest = hashlib.sha256(np.ascontiguousarray(initial_noise, dtype=np.float32).tobytes()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)


class CompactInpaintPipeline(InpaintingPipeline):
    KIND = "pixel-inpaint"
    REFUSAL = "a pixel-inpaint bundle"
    STAGES = STAGES
    STARTS_FROM_FRAME = True
    GUIDANCE_INTERVALS = True
    DEFAULT_INPAINT_AREA = "region"

    def __init__(self, bundle: Bundle, parts: dict[str, OnnxPart]):
        self.detail: dict | None = bundle.manifest["detail"] if DETAIL_STAGE in parts else None
        if self.detail is not None:
            self.STAGES = STAGES + (DETAIL_STAGE,)
        super().__init__(bundle, parts, tokenizer=None)
        self.classes = list(bundle.manifest["classes"])
        # name → its values, in the U-Net's attribute columns; None: the bundle takes no attributes
        self.attribute_values = bundle_attribute_values(bundle)

    @classmethod
    def from_bundle(cls, source: BundleSource, provider: str = "auto", threads: int | None = None,
                    verify_hashes: bool = True) -> CompactInpaintPipeline:
        bundle = cls.read(source, verify_hashes)
        plan = plan_providers(provider, fp16=bundle.manifest["precision"] == "fp16")
        unet = OnnxPart(bundle.path_of("unet"), plan, threads=threads, role="U-Net")
        channels = int(bundle.manifest["image_channels"])
        inputs = {"sample": (None, 2 * channels + 1, None, None), "timestep": (None,), "class_labels": (None,)}
        values = bundle_attribute_values(bundle)
        if values is not None:
            inputs[ATTRIBUTES] = (None, len(values))
        elif ATTRIBUTES in unet.inputs:
            raise BundleError(bundle.root / "bundle.json", "the U-Net takes attributes but the manifest has no "
                                                           "attributes section to say which")
        unet.expect(inputs, ("out_sample",))
        parts = {"unet": unet}
        if bundle.has_part(DETAIL_STAGE):
            check_detail_section(bundle)
            detail = OnnxPart(bundle.path_of(DETAIL_STAGE), plan, threads=threads, role="detail U-Net")
            detail.expect({"sample": (None, 3 * channels + 1, None, None), "timestep": (None,),
                           "noise_level": (None,)}, ("out_sample",))
            parts[DETAIL_STAGE] = detail
        return cls(bundle, parts)

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

    # ------------------------------------------------------------------ attributes
    def attribute_settings(self, prompt: str, attributes: Mapping[str, str] | None,
                           attribute_guidance: float | None = None,
                           attribute_guidance_until: float | None = None) -> dict:
        """{"attributes": the words fed, "attribute_indices": one index per U-Net column, and "attribute_guidance"
        with "attribute_guidance_until" when one is given and something is asked} for a bundle trained with
        attributes (zeros for the removal prompt, whatever is asked); nothing for one without (InputError when
        attributes or their guidance are asked of it)."""
        if self.attribute_values is None:
            return super().attribute_settings(prompt, attributes, attribute_guidance, attribute_guidance_until)
        asked = dict(attributes or {})
        check_asked_attributes(self.bundle, self.attribute_values, asked)
        if attribute_guidance is not None and not 0.0 <= float(attribute_guidance) <= 50.0:
            raise InputError(f"attribute guidance must be between 0 and 50, got {attribute_guidance}")
        until = attribute_guidance_share(
            ATTRIBUTE_GUIDANCE_UNTIL if attribute_guidance_until is None else attribute_guidance_until)
        if REMOVAL_CLASS in self.classes and self.class_of(prompt) == self.classes.index(REMOVAL_CLASS):
            asked = {}  # removal stays a prompt: "Normal" is asked no attributes
        indices = attribute_indices(self.attribute_values.items(), asked)
        settings = {"attributes": {name: asked[name] for name in self.attribute_values if name in asked},
                    "attribute_indices": indices}
        if attribute_guidance is not None and any(indices):  # nothing asked: the label's guidance is all there is
            settings["attribute_guidance"] = float(attribute_guidance)
            settings["attribute_guidance_until"] = until
        return settings

    def _attribute_feed(self, settings: dict, count: int, guided: bool) -> dict[str, np.ndarray]:
        """The U-Net's "attributes" input for a batch of ``count`` variants: zeros for the unconditional half (and,
        with attribute guidance, for the label-only third before the asked one)."""
        if self.attribute_values is None:
            return {}
        asked = np.repeat(np.asarray(settings["attribute_indices"], np.int64)[None], count, axis=0)
        if "attribute_guidance" in settings:
            return {ATTRIBUTES: np.concatenate([np.zeros_like(asked), np.zeros_like(asked), asked])}
        return {ATTRIBUTES: np.concatenate([np.zeros_like(asked), asked]) if guided else asked}

    @staticmethod
    def guide_of(guidance_scale: float, attribute_guidance: float | None = None, until: float = 1.0,
                 interval: tuple[float, float] | None = None) -> Guide:
        """The sampling's rule step by step. With attribute guidance, three predictions [u, c₀, c_a] (stacked in
        that order) → u + G·(c₀ − u) + A·(c_a − c₀) on the first ``until`` of the steps, then two, [u, c_a] (the
        first and last of the three) → u + G·(c_a − u); else that pair [u, c]. With ``interval`` (A, B) either
        guides from the A to the B share of the steps only (the attributes on the first ``until`` of those), and
        the last, fully conditioned prediction alone runs on the others (``unguided``)."""
        start, end = interval if interval is not None else (0.0, 1.0)
        rule = classifier_free(guidance_scale)
        if interval is not None:
            rule = Guide(2, rule.combine, start, end, unguided())
        if attribute_guidance is None:
            return rule

        def combine(predictions: np.ndarray) -> np.ndarray:
            uncond, label_only, asked = np.split(predictions, 3)
            return uncond + guidance_scale * (label_only - uncond) + attribute_guidance * (asked - label_only)

        whole = until >= 1.0 and interval is None
        return Guide(3, combine, start, start + until * (end - start), None if whole else rule)

    # ------------------------------------------------------------------ generation
    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Pixel space: the denoised sample is the image."""
        return decoded_to_image(latents)

    @staticmethod
    def _batch_condition(prepared: PreparedFrame, labels: np.ndarray, count: int) -> tuple[bool, np.ndarray, np.ndarray]:
        """(guided, masked frame + mask repeated for every variant and guidance copy, class labels in the same
        order: [uncond × count, cond × count] when guided; one block of ``count`` per label given)."""
        guided = labels.shape[0] > 1
        copies = labels.shape[0]
        masked = prepared.image * (1.0 - prepared.work_mask)
        condition = np.repeat(np.concatenate([masked, prepared.work_mask], axis=1), count * copies, axis=0).astype(np.float32)
        return guided, condition, np.repeat(labels, count)

    def _denoise(self, prepared: PreparedFrame, labels: np.ndarray, noise: dict[str, np.ndarray], steps: int,
                 guidance_scale: float, scheduler_name: str, settings: dict, progress: ProgressCallback | None,
                 cancel: CancelCheck | None) -> np.ndarray:
        latents = noise["latents"]
        guide = None
        interval = settings.get("guidance_interval")
        if "attribute_guidance" in settings:  # [u, c₀, c_a]: the label's pair, then the label again with attributes
            labels = np.array([0, labels[-1], labels[-1]], dtype=np.int64)
            guide = self.guide_of(guidance_scale, settings["attribute_guidance"],
                                  settings.get("attribute_guidance_until", 1.0), interval)
        elif interval is not None and labels.shape[0] > 1:
            guide = self.guide_of(guidance_scale, interval=interval)
        count = latents.shape[0]
        guided, condition, class_labels = self._batch_condition(prepared, labels, count)
        attributes = self._attribute_feed(settings, count, guided)
        # by the number of copies a step feeds: all the blocks; the first and last (the guided pair [u, c_a] after
        # attribute guidance's steps); the last alone (outside a guidance interval)
        blocks = labels.shape[0]
        chosen = {1: [blocks - 1], 2: [0, blocks - 1], blocks: list(range(blocks))}  # all blocks win for 2 of 2
        inputs = {}
        for copies, which in chosen.items():
            if copies <= blocks:
                rows = np.concatenate([np.arange(b * count, (b + 1) * count) for b in which])
                inputs[copies * count] = {"class_labels": class_labels[rows],
                                          **{k: v[rows] for k, v in attributes.items()}}
        unet = self.parts["unet"]

        def predict(model_input: np.ndarray, t) -> np.ndarray:
            rows = model_input.shape[0]
            feeds = {"sample": np.concatenate([model_input, condition[:rows]], axis=1),
                     "timestep": np.full((rows,), t, dtype=np.float32), **inputs[rows]}
            return self.timed_run("unet", unet, ["out_sample"], feeds)[0]

        strength = settings.get("strength")  # SDEdit: start from the prepared frame, partly noised
        start = None if strength is None else prepared.image
        plan = settings.get("detail")
        if plan is None or not plan["ran"]:
            return self.denoise(latents, steps, scheduler_name, guidance_scale, guided, predict, progress, cancel,
                                start=start, strength=strength or 1.0, guide=guide)
        more = int(plan["steps"])

        def base_progress(done: int, total: int) -> None:
            progress(done, total + more)

        base = self.denoise(latents, steps, scheduler_name, guidance_scale, guided, predict,
                            base_progress if progress is not None else None, cancel, start=start,
                            strength=strength or 1.0, guide=guide)
        base_steps = steps if start is None else min(int(steps * strength), steps)
        return self._detail_stage(prepared, base, latents, plan, base_steps, progress, cancel)

    # ------------------------------------------------------------------ detail stage
    def variant_settings(self, prepared: PreparedFrame, prompt: str, feather_px: int, blend: str | None,
                         conditioning_scale: float) -> dict:
        settings = super().variant_settings(prepared, prompt, feather_px, blend, conditioning_scale)
        if self.detail is not None:
            settings["detail"] = self.detail_plan(prepared)
        return settings

    def detail_plan(self, prepared: PreparedFrame) -> dict:
        """Whether the detail stage runs on this frame's view and how (recorded in every variant's settings):
        only on a region crop whose longer side is above the bundle's ``min_region_side``."""
        x0, y0, x1, y1 = prepared.crop
        side, threshold = max(x1 - x0, y1 - y0), int(self.detail["min_region_side"])
        ran = prepared.inpaint_area == "region" and side > threshold
        scale = int(self.detail["scale"])
        work_w, work_h = prepared.working_size
        plan = {"ran": ran, "region_side": side, "min_region_side": threshold}
        if ran:
            plan.update(working_size=[scale * work_w, scale * work_h], steps=int(self.detail["steps"]),
                        noise_level=int(self.detail["noise_level"]), scheduler=self.detail["scheduler"])
        return plan

    def _detail_stage(self, prepared: PreparedFrame, base: np.ndarray, initial_noise: np.ndarray, plan: dict,
                      done: int, progress: ProgressCallback | None, cancel: CancelCheck | None) -> np.ndarray:
        """The region at the detail size: the base's result (inside the mask) brought up, noised to the
        conditioning level, repainted in ``plan["steps"]`` unguided steps beside the masked crop at that size."""
        width, height = plan["working_size"]
        x0, y0, x1, y1 = prepared.crop
        image = frame_to_model_input(np.ascontiguousarray(prepared.frame[y0:y1, x0:x1]), width, height)
        mask = resize_mask(prepared.mask[y0:y1, x0:x1], width, height).astype(np.float32)[None, None]
        composite = np.clip(base, -1.0, 1.0) * prepared.work_mask + prepared.image * (1.0 - prepared.work_mask)
        low_pixels = np.rint((composite / 2.0 + 0.5) * 255.0).clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        count, shape = base.shape[0], (3, height, width)
        noises = [detail_noise(initial_noise[i], shape) for i in range(count)]
        alpha = float(make_scheduler(plan["scheduler"], self.scheduler_config).alphas_cumprod[plan["noise_level"]])
        low = np.stack([np.sqrt(alpha) * upsampled_condition(p, (width, height)) + np.sqrt(1.0 - alpha) * n[1]
                        for p, n in zip(low_pixels, noises)]).astype(np.float32)
        condition = np.concatenate([low, np.repeat(np.concatenate([image * (1.0 - mask), mask], axis=1), count, axis=0)],
                                   axis=1).astype(np.float32)
        level = np.full((count,), plan["noise_level"], dtype=np.float32)
        part = self.parts[DETAIL_STAGE]
        total = done + int(plan["steps"])

        def predict(model_input: np.ndarray, t) -> np.ndarray:
            feeds = {"sample": np.concatenate([model_input, condition], axis=1),
                     "timestep": np.full((model_input.shape[0],), t, dtype=np.float32), "noise_level": level}
            return self.timed_run(DETAIL_STAGE, part, ["out_sample"], feeds)[0]

        def detail_progress(step: int, _steps: int) -> None:
            progress(done + step, total)

        noise = np.stack([n[0] for n in noises])
        return self.denoise(noise, int(plan["steps"]), plan["scheduler"], 1.0, False, predict,
                            detail_progress if progress is not None else None, cancel)


def check_detail_section(bundle: Bundle) -> None:
    """A detail part's section says how it runs, with the base's noise schedule (the stage shares the
    scheduler config of the bundle); BundleError naming bundle.json otherwise."""
    section = bundle.manifest.get(DETAIL_STAGE)
    needed = ("scale", "size_multiple", "steps", "noise_level", "min_region_side", "scheduler", "scheduler_config")
    missing = [key for key in needed if not isinstance(section, dict) or key not in section]
    if missing:
        raise BundleError(bundle.root / "bundle.json", f"the detail section lacks {', '.join(missing)}")
    if (int(section["scale"]) * int(bundle.manifest["size_multiple"])) % int(section["size_multiple"]):
        raise BundleError(bundle.root / "bundle.json", f"the detail stage's sides must be a multiple of "
                                                       f"{section['size_multiple']}, which {section['scale']}× the "
                                                       f"base's multiple {bundle.manifest['size_multiple']} is not")
    if section["scheduler_config"] != bundle.manifest["scheduler"]:
        raise BundleError(bundle.root / "bundle.json", "the detail stage's scheduler_config differs from the base's "
                                                       "scheduler: this engine runs both on one noise schedule")

