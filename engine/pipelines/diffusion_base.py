"""What every pipeline shares (sd-inpaint: Polyp-Gen; sd-controlnet: CCIS-Diff; pixel-inpaint and pixel-controlnet:
the compact models): opening the bundle (read once, kind checked), the bundle's sampling fields, prompt encoding
with a cache, the sampling defaults, ``generate_variants`` (per-variant noise from its seed, batches of variants,
timing, the settings a variant records), the classifier-free-guided denoising loop (progress and cancel each step)
and one-at-a-time VAE decoding; and what the three pipelines that inpaint a frame share (``InpaintingPipeline``:
the model's view of the frame, its default blend, the paste-back into the crop).

A subclass supplies what differs: ``_denoise`` (the model calls of one step, as ``predict(model_input, t) -> noise``
on the 2·N batch, unconditional half first when guided), what else a variant's settings say (``variant_settings``),
and how a decoded image becomes the result (``finish``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from engine.bundle import Bundle
from engine.errors import BundleError, Cancelled, InputError
from engine.masks.geometry import resize_mask
from engine.pipelines.attribute_inputs import check_asked_attributes
from engine.pipelines.guidance import Guide, classifier_free, check_interval_has_steps, parse_guidance_interval
from engine.pipelines.framing import (
    blend_for_prompt,
    check_frame_and_mask,
    decoded_to_image,
    default_feather_px,
    frame_to_model_input,
    model_view,
    paste_back_in_crop,
)
from engine.pipelines.sampling_settings import resolve_sampling
from engine.runtime.opening import BundleSource, bundle_of_kind
from engine.runtime.session import OnnxPart
from engine.schedulers import make_scheduler
from engine.text.clip_tokenizer import PromptTokenizer

ProgressCallback = Callable[[int, int], None]  # (steps done, steps in total)
CancelCheck = Callable[[], bool]
NoisePredictor = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class VariantResult:
    """One generated variant."""

    image: np.ndarray  # uint8 (H, W, 3): the frame with the masked region generated (or, for an sd-controlnet
    # pipeline given no frame, the generated image at the mask's resolution)
    raw: np.ndarray  # float32 (h, w, 3) in [0, 1]: the decoded image at working size (what diffusers returns)
    seed: int | None
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0


def steps_run(steps: int, strength: float) -> int:
    """How many of ``steps`` timesteps the sampling loop runs from a frame noised to ``strength`` (the last ones, as
    diffusers' img2img pipelines): all of them at strength 1."""
    return min(int(steps * strength), steps)


class OnnxDiffusionPipeline:
    KIND = ""  # the bundle kind it runs
    REFUSAL = ""  # what a bundle of another kind is told it is not ("an inpainting bundle")
    STAGES: tuple[str, ...] = ()
    STARTS_FROM_FRAME = False  # can start from the prepared frame partly noised (``strength``): SDEdit
    GUIDANCE_INTERVALS = False  # its _denoise takes a guidance interval (one prediction a step outside it)
    PROMPT_CACHE_SIZE = 16
    # Noise drawn per variant after its initial latents, from the same seed (replaceable like them, by the
    # generate_variants keyword of that name)
    EXTRA_NOISE: tuple[str, ...] = ()

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

    @classmethod
    def read(cls, source: BundleSource, verify_hashes: bool = True) -> Bundle:
        """The bundle at ``source`` (or the Bundle already read), of this pipeline's kind; BundleError otherwise."""
        return bundle_of_kind(source, cls.KIND, cls.REFUSAL, verify_hashes)

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

    def default_negative_prompt(self) -> str:
        return self.prompts.get("negative", "")

    # ------------------------------------------------------------------ generation
    def generate_variants(
        self,
        prepared,
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
        conditioning_scale: float = 1.0,
        strength: float | None = None,
        attributes: Mapping[str, str] | None = None,
        attribute_guidance: float | None = None,
        attribute_guidance_until: float | None = None,
        guidance_interval: str | tuple[float, float] | None = None,
    ) -> list[VariantResult]:
        """Variants of one prepared frame (``prepare_frame``), one per seed, ``batch_size`` of them per model call.

        Each variant's noise comes from its own seed, so a variant's bytes do not depend on the batch size;
        ``latents`` (one array per seed, latent-shaped) replaces a variant's initial noise, and
        ``masked_image_noise`` its VAE posterior sample (sd-inpaint), to reproduce diffusers exactly. Every
        pipeline takes every keyword, so the batch job calls them alike, and ignores what is not its own:
        ``blend`` ("feather", "poisson" or "mucosa", engine.pipelines.blending; None: mucosa for the removal prompt) is
        how an inpainting pipeline pastes back, ``conditioning_scale`` how strongly the sd-controlnet pipeline
        adds its ControlNet's residuals. ``strength`` (0 < s ≤ 1; pixel-space bundles): start from the prepared
        frame itself noised to that point of the schedule instead of from pure noise, and run only the last
        round(s · steps) steps (SDEdit): the frame's structure inside the mask stays, its seams and light are
        redrawn — the model-harmonized transplant. ``attributes`` ({name: value}, e.g. {"colour": "red"}): what a
        bundle trained with attributes is asked for (``attribute_settings``); InputError from any other bundle.
        ``attribute_guidance`` (a bundle trained with attributes): how hard the asked attributes are guided, apart
        from the label's ``guidance_scale`` (None: as hard as the label, one guided pair);
        ``attribute_guidance_until`` (0 < u ≤ 1) on the first u of the steps, the noisiest, where a polyp's colour
        and surface are decided, and as one guided pair after (None: the bundle's kind's default).
        ``guidance_interval`` ("A-B" or (A, B); pipelines with GUIDANCE_INTERVALS): guidance only from the A to the B
        share of the steps, the conditional prediction alone on the others (one U-Net prediction instead of two).
        """
        prompt = self.prompts.get("add", "") if prompt is None else prompt
        negative_prompt = self.default_negative_prompt() if negative_prompt is None else negative_prompt
        steps, guidance_scale, scheduler = self.sampling_settings(steps, guidance_scale, scheduler, batch_size)
        if strength is not None:
            self.check_strength(strength)
        height, width = prepared.mask.shape
        if feather_px is None:
            feather_px = default_feather_px(width, height)
        guided = guidance_scale > 1.0
        interval = parse_guidance_interval(guidance_interval)
        if interval is not None and not self.GUIDANCE_INTERVALS:
            raise InputError(f"{self.bundle.name}: a guidance interval needs a pixel-inpaint (compact) bundle; this "
                             f"one is {self.bundle.kind}")
        run = steps_run(steps, 1.0 if strength is None else float(strength))
        if guided and run:
            check_interval_has_steps(interval, run)
        embeddings = self.encode_prompt(prompt, negative_prompt, guided)
        work_w, work_h = prepared.working_size
        noise_shape = (1, self.latent_channels, work_h // self.vae_scale_factor, work_w // self.vae_scale_factor)
        settings = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "scheduler": scheduler,
            **self.variant_settings(prepared, prompt, feather_px, blend, conditioning_scale),
            **({"guidance_interval": list(interval)} if interval is not None and guided else {}),
            **self.attribute_settings(prompt, attributes, attribute_guidance, attribute_guidance_until),
            **({"strength": float(strength)} if strength is not None else {}),
        }
        given = {"latents": latents, "masked_image_noise": masked_image_noise}
        noise_names = ("latents", *self.EXTRA_NOISE)

        results: list[VariantResult] = []
        for start in range(0, len(seeds), batch_size):
            chunk = range(start, min(start + batch_size, len(seeds)))
            started = time.perf_counter()
            drawn: dict[str, list[np.ndarray]] = {name: [] for name in noise_names}
            for index in chunk:
                rng = np.random.default_rng(seeds[index])
                for name in noise_names:
                    drawn[name].append(given_or_drawn(given[name], index, rng, noise_shape, name))
            noise = {name: np.concatenate(arrays) for name, arrays in drawn.items()}
            final = self._denoise(prepared, embeddings, noise, steps, guidance_scale, scheduler, settings, progress,
                                  cancel)
            decoded = self.decode(final)
            per_image = (time.perf_counter() - started) / len(chunk)
            for offset, index in enumerate(chunk):
                raw = decoded[offset]
                results.append(VariantResult(image=self.finish(prepared, raw, settings), raw=raw, seed=seeds[index],
                                             settings=dict(settings), seconds=per_image))
        return results

    def check_strength(self, strength: float) -> None:
        """InputError unless this pipeline can start from a partly noised frame at ``strength``."""
        if not 0.0 < float(strength) <= 1.0:
            raise InputError(f"strength must be in (0, 1], got {strength}")
        if not self.STARTS_FROM_FRAME:
            raise InputError(f"{self.bundle.name}: starting from a partly noised frame (strength) needs a "
                             f"pixel-inpaint bundle; this one is {self.bundle.kind}")

    def variant_settings(self, prepared, prompt: str, feather_px: int, blend: str | None,
                         conditioning_scale: float) -> dict:
        """What a variant's settings say after the prompts and the sampling (in the order they are recorded),
        with this pipeline's own keywords resolved: ``finish`` and ``_denoise`` read them from here."""
        raise NotImplementedError

    def attribute_settings(self, prompt: str, attributes: Mapping[str, str] | None,
                           attribute_guidance: float | None = None,
                           attribute_guidance_until: float | None = None) -> dict:
        """What a variant's settings say of the attributes asked: nothing here, where no bundle takes any (a bundle
        trained with attributes: engine.pipelines.compact); InputError when some are asked all the same, or an
        attribute guidance (or its interval) is given."""
        check_asked_attributes(self.bundle, None, attributes)
        if attribute_guidance is not None or attribute_guidance_until is not None:
            raise InputError(f"the bundle {self.bundle.name!r} was not trained with attributes: attribute guidance "
                             "applies to a bundle that was")
        return {}

    def _denoise(self, prepared, embeddings, noise: dict[str, np.ndarray], steps: int, guidance_scale: float,
                 scheduler_name: str, settings: dict, progress: ProgressCallback | None,
                 cancel: CancelCheck | None) -> np.ndarray:
        """The final latents of a batch of variants: ``noise["latents"]`` (and each of EXTRA_NOISE) stacked."""
        raise NotImplementedError

    def finish(self, prepared, raw: np.ndarray, settings: dict) -> np.ndarray:
        """A variant's image from its decoded one (float [0, 1] at working size)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ sampling
    def sampling_settings(self, steps, guidance_scale, scheduler, batch_size) -> tuple[int, float, str]:
        """Steps, guidance and scheduler with the bundle's defaults filled in, checked."""
        return resolve_sampling(self.defaults, steps, guidance_scale, scheduler, batch_size)

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
        start: np.ndarray | None = None,
        strength: float = 1.0,
        guide: "Guide | None" = None,
    ) -> np.ndarray:
        """The sampling loop: scale the initial noise, then per timestep predict (on [latents] × 2 when
        guided), guide, and step the numpy scheduler; cancel is checked before every step.

        With ``start`` (the clean sample, latent-shaped) and ``strength`` < 1, as diffusers' img2img pipelines:
        only the last min(int(steps · strength), steps) timesteps run, from ``start`` noised to the first of them
        with ``latents`` as the noise. ``guide`` replaces the guided pair's rule (``classifier_free``): its ``copies``
        of the latents go to ``predict`` and its ``combine`` makes one prediction of them (compact attribute guidance:
        three copies), step by step (``Guide.at``: a rule may hold for the noisiest steps only)."""
        if guide is None and guided:
            guide = classifier_free(guidance_scale)
        scheduler = make_scheduler(scheduler_name, self.scheduler_config)
        scheduler.set_timesteps(steps)
        timesteps = scheduler.timesteps
        if start is None:
            scheduler.set_begin_index(0)  # as diffusers' pipelines do at strength 1 (matters for repeated timesteps)
            latents = (latents * scheduler.init_noise_sigma).astype(np.float32)
        else:
            begin = max(steps - steps_run(steps, strength), 0)
            timesteps = timesteps[begin:]
            if len(timesteps) == 0:
                return np.repeat(start, latents.shape[0] // start.shape[0], axis=0).astype(np.float32)
            scheduler.set_begin_index(begin)
            latents = scheduler.add_noise(np.repeat(start, latents.shape[0] // start.shape[0], axis=0), latents,
                                          timesteps[0])
        total = len(timesteps)
        for step_index, t in enumerate(timesteps):
            if cancel is not None and cancel():
                raise Cancelled(f"cancelled at step {step_index} of {total}")
            rule = guide.at(step_index, total) if guide is not None else None
            copies = rule.copies if rule is not None else 1
            model_input = scheduler.scale_model_input(np.concatenate([latents] * copies), t).astype(np.float32)
            noise_pred = predict(model_input, t).astype(np.float32)
            if rule is not None:
                noise_pred = rule.combine(noise_pred)
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


@dataclass
class PreparedFrame:
    """A frame and its mask made ready once, for any number of variants: what the model sees of it."""

    frame: np.ndarray  # uint8 (H, W, 3), original resolution
    mask: np.ndarray  # bool (H, W), original resolution
    crop: tuple[int, int, int, int]  # (x0, y0, x1, y1) of the frame the model sees (the whole frame in frame mode)
    inpaint_area: str
    working_size: tuple[int, int]  # (w, h) the model sees
    image: np.ndarray  # float32 (1, 3, h, w) in [-1, 1]: the crop at working size
    work_mask: np.ndarray  # float32 (1, 1, h, w) in {0, 1}
    # sd-inpaint only (engine.pipelines.inpaint): the mask at latent size and the VAE posterior of the masked crop
    latent_mask: np.ndarray | None = None  # float32 (1, 1, h/8, w/8)
    posterior_mean: np.ndarray | None = None  # float32 (1, 4, h/8, w/8)
    posterior_std: np.ndarray | None = None  # float32 (1, 4, h/8, w/8)


class InpaintingPipeline(OnnxDiffusionPipeline):
    """What the pipelines that inpaint a frame share (sd-inpaint, pixel-inpaint, pixel-controlnet): the model's
    view of the frame (the whole frame, or with ``inpaint_area="region"`` the crop around the mask:
    engine.pipelines.framing.model_view), the blend for the prompt, and the paste-back of the masked region into
    the crop (every pixel outside the mask keeps its byte)."""

    DEFAULT_INPAINT_AREA = "frame"  # when neither the call nor the bundle's sampling defaults say

    def prepare_frame(self, frame: np.ndarray, mask: np.ndarray, working_size: tuple[int, int] | None = None,
                      inpaint_area: str | None = None, region_padding: int | None = None,
                      model_size: int | None = None) -> PreparedFrame:
        """Crop (in region mode) and resize the frame and its mask to working size, once: ``working_size`` (w, h)
        exactly, else about ``model_size``² pixels (None: the bundle's image size) at the view's aspect."""
        frame, mask = check_frame_and_mask(frame, mask)
        height, width = frame.shape[:2]
        area = inpaint_area or self.defaults.get("inpaint_area", self.DEFAULT_INPAINT_AREA)
        crop, (work_w, work_h) = model_view(width, height, mask, area, region_padding, model_size or self.image_size,
                                            self.size_multiple, working_size)
        x0, y0, x1, y1 = crop
        image = frame_to_model_input(np.ascontiguousarray(frame[y0:y1, x0:x1]), work_w, work_h)
        work_mask = resize_mask(mask[y0:y1, x0:x1], work_w, work_h).astype(np.float32)[None, None]
        return PreparedFrame(frame=frame, mask=mask, crop=crop, inpaint_area=area, working_size=(work_w, work_h),
                             image=image.astype(np.float32), work_mask=work_mask)

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
        attributes: Mapping[str, str] | None = None,
        attribute_guidance: float | None = None,
        attribute_guidance_until: float | None = None,
        guidance_interval: str | tuple[float, float] | None = None,
    ) -> VariantResult:
        """One image. ``latents`` / ``masked_image_noise`` (float32, latent shape) replace the noise drawn
        from ``seed`` for the initial latents / the VAE posterior sample (sd-inpaint), to reproduce a reference;
        the attributes' keywords are ``generate_variants``'."""
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
            attributes=attributes,
            attribute_guidance=attribute_guidance,
            attribute_guidance_until=attribute_guidance_until,
            guidance_interval=guidance_interval,
        )[0]

    def variant_settings(self, prepared: PreparedFrame, prompt: str, feather_px: int, blend: str | None,
                         conditioning_scale: float) -> dict:
        blend = blend_for_prompt(prompt, self.prompts.get("remove")) if blend is None else blend
        return {"working_size": list(prepared.working_size), "feather_px": feather_px, "blend": blend,
                "inpaint_area": prepared.inpaint_area, "region_crop": list(prepared.crop)}

    def finish(self, prepared: PreparedFrame, raw: np.ndarray, settings: dict) -> np.ndarray:
        return paste_back_in_crop(prepared.frame, raw, prepared.mask, settings["feather_px"], prepared.crop,
                                  settings["blend"])


def check_controlnet_section(bundle: Bundle, refusal: str) -> None:
    """A ControlNet bundle's manifest names its residuals; BundleError naming bundle.json otherwise."""
    section = bundle.manifest.get("controlnet")
    if not isinstance(section, dict) or not section.get("residuals"):
        raise BundleError(bundle.root / "bundle.json", f"lacks controlnet.residuals, which {refusal} needs")


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
