"""What happens to one frame of a batch job, whoever schedules it: the local loop or a Ray worker.

``FrameWork.run(task, on_record)`` reads the frame, its mask and labels once, asks the retrieval proposer
once, then per variant: resolves the region, VAE-encodes the frame (once for all variants that share a
region), generates, writes the image and its instance mask atomically, and hands the variant's manifest
record to ``on_record`` after its files exist. This is the one place a variant is made.

An unreadable frame, mask or label file is a ``failed`` record for each of its variants; a variant with
nothing to do is ``skipped``: neither stops the job. What belongs to the scheduler stays out of here: the
plan, the manifest file (one writer), progress counts, rebuilding the annotation files.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import __version__
from engine.dataset.discovery import SourceFrame
from engine.dataset.image_reader import read_frame, read_mask
from engine.dataset.labels import read_yolo
from engine.errors import Cancelled, InputError, PolypForgeError
from engine.captioning.conditioning import AttributePlan, derived_attributes
from engine.jobs.attributes import check_attributes_fit, variant_attributes
from engine.judge.rejection import attempts_of, generate_judged, open_gate, open_mucosa_check
from engine.fileio import save_png_atomic
from engine.pipelines import pipeline_class
from engine.pipelines.guidance import check_interval_has_steps, parse_guidance_interval
from engine.pipelines.sampling_settings import resolve_sampling
from engine.masks.instances import Instance, instance_from_mask, instances_from_mask
from engine.masks.placement import NoPlace
from engine.masks.size_prior import SizeDistribution
from engine.masks.sources import Region, Skip, resolve_region
from engine.pipelines.blending import default_blend
from engine.transplant import DonorPool, Transplant, harmonize_region, transplant_variant

REJECTED_DIR = "rejected"  # where rejected variants' files live: the judge's (here) and the review gallery's


@dataclass
class WorkItem:
    frame: SourceFrame
    variant: int
    seed: int
    image: str  # output path relative to the output folder

    @property
    def key(self) -> str:
        return f"{self.frame.rel}#{self.variant}"


@dataclass
class FrameTask:
    """One frame and the variants of it still to make, with the prompt they use (and, for random masks, the
    job's polyp size distribution: it travels with the task to whichever worker makes it)."""

    frame: SourceFrame
    items: list[WorkItem]
    prompt: str
    prompt_source: str  # "captions", "job" or "bundle"
    sizes: SizeDistribution | None = None
    donors: DonorPool | None = None  # mode transplant: the input's train frames' polyps
    attributes: AttributePlan | None = None  # a bundle trained with attributes: what each variant is asked


@dataclass
class MovedPolyp:
    """A transplant variant: its image, the settings its manifest line records (those of the model pass with
    harmonize "model"), the transplant itself and the region the variant changed."""

    image: np.ndarray
    settings: dict
    transplant: Transplant
    region: np.ndarray  # bool (H, W)


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def base_record(item: WorkItem, spec, bundle) -> dict:
    """The provenance every manifest line carries, whatever its status."""
    frame = item.frame
    return {
        "key": item.key,
        "image": item.image,
        "source_frame": frame.rel,
        "split": item.image.split("/")[1],
        "variant": item.variant,
        "seed": item.seed,
        "mode": spec.mode,
        "mask_source": spec.mask_source,
        "source_sha256": file_sha256(frame.path),
        "mask_file": frame.mask_path.relative_to(spec.input).as_posix() if frame.mask_path is not None and frame.mask_path.is_relative_to(spec.input) else (str(frame.mask_path) if frame.mask_path else None),
        "label_source": frame.label_source,
        **({"source_synthetic": frame.made_by} if getattr(frame, "made_by", None) else {}),  # an earlier job's variant
        "bundle": bundle.name,
        "bundle_id": bundle.bundle_id,
        "engine_version": __version__,
    }


def failed_record(item: WorkItem, spec, bundle, reason: str) -> dict:
    return base_record(item, spec, bundle) | {"status": "failed", "reason": reason}


def frame_instances(frame: SourceFrame, width: int, height: int):
    if frame.label_instances is not None:
        return list(frame.label_instances)
    if frame.yolo_path is not None:
        return read_yolo(frame.yolo_path, width, height)
    return []


def open_pipeline(spec, threads: int | None = None):
    """The job's pipeline (engine.pipelines.open_pipeline: the pipeline of the bundle's kind). The bundle is read
    once, here, its files' sha256 checked, and checked against what the job asks (check_bundle_fits) before a model
    loads; onnxruntime threads from `threads`, else the job's."""
    from engine.bundle import read_bundle
    from engine.pipelines import open_pipeline as open_bundle_pipeline

    bundle = read_bundle(spec.model)
    check_bundle_fits(spec, bundle)
    return open_bundle_pipeline(bundle, provider=spec.provider, threads=threads or spec.threads)


CAPTIONED_KINDS = ("sd-controlnet", "pixel-controlnet")  # bundles prompted with a frame's clinical caption


def check_bundle_fits(spec, bundle) -> str:
    """The bundle's kind, or InputError when the job asks what that kind cannot do."""
    kind = bundle.kind
    if kind in CAPTIONED_KINDS and spec.mode != "add":
        raise InputError(f"{spec.model}: a {kind} bundle generates polyps at a mask (mode add); "
                         "mode remove needs an sd-inpaint or pixel-inpaint bundle")
    if kind not in CAPTIONED_KINDS and getattr(spec, "captions", None) is not None:
        raise InputError(f"{spec.captions}: per-frame captions need an sd-controlnet or pixel-controlnet bundle; "
                         f"{spec.model} is {kind}")
    interval = parse_guidance_interval(getattr(spec, "guidance_interval", None))
    if interval is not None and not pipeline_class(kind).GUIDANCE_INTERVALS:  # the pipeline's own flag
        raise InputError(f"{spec.model}: a guidance interval (--guidance-interval) needs a pixel-inpaint (compact) "
                         f"bundle; this one is {kind}")
    steps, guidance_scale, _ = resolve_sampling(bundle.manifest["sampling"], spec.steps, spec.guidance,
                                                spec.scheduler)
    if guidance_scale > 1.0:
        check_interval_has_steps(interval, steps)
    check_attributes_fit(spec, bundle)
    return kind


def open_proposer(spec, threads: int | None = None):
    """The retrieval proposer of a job with mask source "retrieved", else None."""
    if spec.mask_source != "retrieved":
        return None
    from engine.retrieval import RetrievalProposer

    return RetrievalProposer.open(spec.db, provider=spec.provider, threads=threads or spec.threads)



OnRecord = Callable[[dict], None]
OnStep = Callable[[WorkItem, int, int], None]


class FrameWork:
    """The job-wide things a frame needs (spec, opened pipeline, proposer), and ``run`` for one frame."""

    def __init__(self, spec, pipeline, proposer=None, retrieval_db_id: str | None = None,
                 captions_file: Path | None = None, write_png: Callable = save_png_atomic):
        self.spec = spec
        self.pipeline = pipeline
        self.proposer = proposer
        self.retrieval_db_id = retrieval_db_id
        self.captions_file = captions_file  # recorded in each line when the job has per-frame captions
        self.write_png = write_png
        self.gate = open_gate(spec)  # --judge: the variants it disagrees with are rejected (engine.evaluation)
        self.mucosa_check = open_mucosa_check(spec)  # removals: a fill darker than its mucosa is painted again
        self.attempts = attempts_of(spec)

    @property
    def uses_no_model(self) -> bool:
        """True when no variant calls the model (copy-paste or Poisson transplants): frames may run in threads."""
        return self.spec.mode == "transplant" and self.spec.harmonize != "model"

    def run(self, task: FrameTask, on_record: OnRecord, on_step: OnStep | None = None,
            cancel: Callable[[], bool] | None = None) -> None:
        spec, pipeline = self.spec, self.pipeline
        cancelled = cancel or (lambda: False)
        frame = task.frame
        try:
            pixels = read_frame(frame.path)
            user_mask = None
            if frame.mask_path is not None:
                user_mask = read_mask(frame.mask_path)
            labels = frame_instances(frame, pixels.shape[1], pixels.shape[0])
            proposals = self.proposer.propose(pixels, spec.top_k) if self.proposer is not None else []
        except PolypForgeError as exc:  # unreadable frame, mask or labels; a retrieval failure on this frame
            for item in task.items:
                on_record(failed_record(item, spec, pipeline.bundle, str(exc)))
            return
        prepared_for = None
        prepared = None
        derived_for, derived = None, None  # the region's measured size and outline (attributes)
        for item in task.items:
            if cancelled():
                raise Cancelled("cancelled between variants")
            t0 = time.perf_counter()
            # Variants of a frame take the proposals in turn: diversity across variants.
            proposal = proposals[item.variant % len(proposals)] if proposals else None
            if spec.mode == "transplant":
                self._run_transplant(task, item, pixels, user_mask, labels, on_record, on_step, cancelled, t0)
                continue
            try:
                region = resolve_region(spec.mode, spec.mask_source, pixels, user_mask, labels, spec.box_pad,
                                        item.seed, proposal.box if proposal is not None else None, task.sizes)
                region_key = region.mask.tobytes() if spec.mask_source in ("random", "retrieved") else "fixed"
                if prepared is None or prepared_for != region_key:
                    prepared = pipeline.prepare_frame(pixels, region.mask, inpaint_area=spec.inpaint_area,
                                                      region_padding=spec.region_padding, model_size=spec.working_size)
                    prepared_for = region_key
                if task.attributes is not None and task.attributes.asks and derived_for != region_key:
                    derived, derived_for = derived_attributes(pixels, region.mask), region_key
                asked, attribute_record = variant_attributes(task.attributes, item.seed, pixels, region.mask,
                                                             derived)

                def step(done_steps, total_steps, _item=item):
                    if on_step is not None:
                        on_step(_item, done_steps, total_steps)

                def generate(seed, _prepared=prepared, _step=step, _asked=asked):
                    (generated,) = pipeline.generate_variants(
                        _prepared, [seed], prompt=task.prompt, negative_prompt=spec.negative_prompt, steps=spec.steps,
                        guidance_scale=spec.guidance, scheduler=spec.scheduler, progress=_step, cancel=cancelled,
                        blend=spec.blend or default_blend(spec.mode == "remove"), attributes=_asked,
                        attribute_guidance=spec.attribute_guidance,
                        attribute_guidance_until=spec.attribute_guidance_until,
                        guidance_interval=spec.guidance_interval,
                    )
                    return generated

                judged = generate_judged(self.gate, generate, item.seed, spec.mode, region.generated, region.removed,
                                         self.mucosa_check, region.mask, self.attempts)
            except Skip as reason:
                on_record(base_record(item, spec, pipeline.bundle) | {"status": "skipped", "reason": str(reason)})
                continue
            except InputError as exc:
                on_record(failed_record(item, spec, pipeline.bundle, str(exc)))
                continue
            record = self._write_variant(item, task, pixels, region, judged, proposal, time.perf_counter() - t0)
            on_record(record | attribute_record)

    def _run_transplant(self, task: FrameTask, item: WorkItem, pixels, user_mask, labels: list[Instance], on_record,
                        on_step, cancelled, t0: float) -> None:
        """One transplant variant: a donor polyp moved onto free mucosa of this frame (engine.transplant), then
        with harmonize "model" redrawn by the bundle over its footprint and a band at ``strength``."""
        spec, pipeline = self.spec, self.pipeline
        existing = instances_from_mask(user_mask, "mask") if user_mask is not None and user_mask.any() else list(labels)

        def step(done_steps, total_steps):
            if on_step is not None:
                on_step(item, done_steps, total_steps)

        def generate(seed) -> MovedPolyp:
            moved = transplant_variant(pixels, existing, task.donors, task.sizes, seed, spec.harmonize)
            if spec.harmonize != "model":
                settings = {"prompt": None, "negative_prompt": None, "steps": 0, "scheduler": None,
                            "guidance_scale": None, "working_size": None, "feather_px": None,
                            "blend": spec.harmonize, "inpaint_area": None, "region_crop": None}
                return MovedPolyp(moved.image, settings, moved, moved.footprint)
            region = harmonize_region(moved)
            prepared = pipeline.prepare_frame(moved.image, region, inpaint_area=spec.inpaint_area,
                                              region_padding=spec.region_padding, model_size=spec.working_size)
            (result,) = pipeline.generate_variants(
                prepared, [seed], prompt=task.prompt, negative_prompt=spec.negative_prompt, steps=spec.steps,
                guidance_scale=spec.guidance, scheduler=spec.scheduler, progress=step, cancel=cancelled,
                blend=spec.blend or default_blend(False), strength=spec.strength)
            return MovedPolyp(result.image, result.settings, moved, region)

        def new_polyp(result: MovedPolyp) -> list[Instance]:
            return [instance_from_mask(result.transplant.label, "transplant")]

        try:
            judged = generate_judged(self.gate, generate, item.seed, spec.mode, new_polyp, [],
                                     max_attempts=self.attempts)
        except NoPlace as reason:
            on_record(base_record(item, spec, pipeline.bundle) | {"status": "skipped", "reason": str(reason)})
            return
        except PolypForgeError as exc:  # no usable donor, a strength the bundle cannot take
            on_record(failed_record(item, spec, pipeline.bundle, str(exc)))
            return
        moved = judged.result
        region = Region(moved.region, generated=new_polyp(moved), kept=existing)
        record = self._write_variant(item, task, pixels, region, judged, None, time.perf_counter() - t0,
                                     exact_masks=[moved.transplant.label])
        record["transplant"] = moved.transplant.record | (
            {"strength": moved.settings["strength"]} if "strength" in moved.settings else {})
        for key in ("size_drawn", "size_placed", "size_source"):
            if key in moved.transplant.record:
                record[key] = moved.transplant.record[key]
        on_record(record)

    def _write_variant(self, item: WorkItem, task: FrameTask, pixels, region, judged, proposal, started_seconds,
                       exact_masks: list[np.ndarray] | None = None) -> dict:
        """Write the variant's image and instance mask (the generated polyps' outlines rasterised, or
        ``exact_masks`` where the pixels are known: a transplant's label is its pasted mask, exactly) and return
        its manifest record."""
        spec, pipeline = self.spec, self.pipeline
        result = judged.result
        t0 = time.perf_counter()
        instances = region.kept + region.generated
        # A variant a check rejected is written where a rejection in the review gallery puts it.
        folder = spec.output if judged.accepted else spec.output / REJECTED_DIR
        self.write_png(folder / item.image, result.image)
        instance_map = np.zeros(region.mask.shape, np.uint8)
        for index, instance in enumerate(region.generated, start=1):
            pixels_of = exact_masks[index - 1] if exact_masks is not None else instance.raster(*region.mask.shape)
            instance_map[pixels_of & region.mask] = index
        mask_path = item.image.replace("images/", "masks/", 1)
        self.write_png(folder / mask_path, instance_map)
        seconds = started_seconds + (time.perf_counter() - t0)
        record = base_record(item, spec, pipeline.bundle) | {
            "status": "ok",
            "mask": mask_path,
            "width": int(pixels.shape[1]),
            "height": int(pixels.shape[0]),
            "instances": [i.to_json() for i in instances],
            "removed": [i.to_json() for i in region.removed],
            "prompt": result.settings["prompt"],
            "prompt_source": task.prompt_source,
            "negative_prompt": result.settings["negative_prompt"],
            "steps": result.settings["steps"],
            "scheduler": result.settings["scheduler"],
            "guidance": result.settings["guidance_scale"],
            **({key: result.settings[key] for key in ("guidance_interval", "attribute_guidance",
                                                      "attribute_guidance_until") if key in result.settings}),
            "working_size": result.settings["working_size"],
            "feather_px": result.settings["feather_px"],
            "blend": result.settings.get("blend", "feather"),
            "inpaint_area": result.settings.get("inpaint_area", "frame"),
            "region_crop": result.settings.get("region_crop"),
            "provider": pipeline.provider,
            "seconds": round(seconds, 3),
        }
        if pipeline.bundle.kind in CAPTIONED_KINDS:
            record["bundle_kind"] = pipeline.bundle.kind
            if "conditioning_scale" in result.settings:
                record["conditioning_scale"] = result.settings["conditioning_scale"]
            if self.captions_file is not None:
                record["captions"] = str(self.captions_file)
        if region.size is not None:  # random masks: the size drawn, the size placed, where the size came from
            record.update(region.size)
        if proposal is not None:
            record["retrieval"] = {"db": str(spec.db), "db_id": self.retrieval_db_id, "proposal": proposal.to_json()}
        record.update(judged.record(self.gate, self.mucosa_check))
        return record
