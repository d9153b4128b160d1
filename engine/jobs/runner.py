"""run_job(spec, on_event, cancel): a folder of frames → an annotated, resumable dataset.

Order of work: refuse an output folder that would hold the input, take the output folder's lock (one job
per folder; a dead holder's lock is taken over) → discover the input, never entering the job's own output
nor an earlier job's unless asked → check the output folder and the bundle (anything wrong here stops the
job before it starts, with one line) → plan (frame × variant, each with a seed derived from the job seed,
the frame's path and the variant number, so a variant's seed never depends on the other frames) → skip what
the manifest already records as done → per frame: read it once, resolve the region, VAE-encode it once for
all its variants (the prompt is encoded once per job) → per variant: generate, write image and instance
mask atomically, append a manifest line → rebuild COCO, YOLO, data.yaml and the contact sheet from the
manifest (streamed) → release the lock. One bad frame is a failed manifest line, never a stopped job.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine import __version__
from engine.dataset.discovery import SourceFrame, check_output_placement, discover
from engine.dataset.image_reader import read_frame, read_mask
from engine.dataset.job_folder import JOB_RECORD
from engine.dataset.labels import read_yolo
from engine.dataset.manifest import Manifest
from engine.dataset.rebuild import rebuild_outputs
from engine.errors import Cancelled, InputError, OutputLocked, PolypForgeError
from engine.fileio import atomic_write_bytes, save_png_atomic
from engine.jobs.events import JobEvent
from engine.jobs.output_lock import take_output_lock
from engine.masks.sources import Skip, resolve_region
from engine.pipelines.inpaint import InpaintPipeline

OWNED_OUTPUTS = ("images", "masks", "labels", "yolo-seg", "annotations")


class JobCannotStart(PolypForgeError):
    """Missing input, unwritable output, bad bundle, settings that contradict an earlier run."""


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
class JobSummary:
    status: str  # "ok", "failures", "cancelled"
    output: Path
    planned: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    reused: int = 0  # done by an earlier, interrupted run
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    provider: str = ""

    def to_json(self) -> dict:
        return {**self.__dict__, "output": str(self.output)}


def variant_seed(job_seed: int, frame_rel: str, variant: int) -> int:
    digest = hashlib.sha256(f"{job_seed}:{frame_rel}:{variant}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def _flat_name(rel: str) -> str:
    """A frame's relative path as one file name: folders joined by '__', extension dropped."""
    stem = Path(rel).with_suffix("").as_posix()
    parts = stem.split("/")
    if len(parts) > 1 and parts[0].lower() in ("train", "val", "valid", "validation", "test", "training"):
        parts = parts[1:]
    return "__".join(parts)


def plan(frames: list[SourceFrame], spec) -> list[WorkItem]:
    items = []
    for frame in frames:
        if frame.split not in spec.from_splits:
            continue
        out_split = frame.split if frame.split != "train" else "train"
        for variant in range(spec.variants):
            name = f"{_flat_name(frame.rel)}__{spec.mode}-{spec.mask_source}-v{variant:02d}.png"
            items.append(WorkItem(frame, variant, variant_seed(spec.seed, frame.rel, variant), f"images/{out_split}/{name}"))
    return items


def _prepare_output(spec, settings: dict) -> None:
    output = spec.output
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".polypforge-write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise JobCannotStart(f"{output}: output folder is not writable ({exc.strerror or exc})") from None
    record_path = output / JOB_RECORD
    if record_path.exists() and spec.resume:
        try:
            previous = json.loads(record_path.read_text(encoding="utf-8"))["settings"]
        except (ValueError, KeyError, OSError):
            previous = None
        if previous is not None and previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise JobCannotStart(
                f"{output}: holds a job made with other settings ({', '.join(changed)}); "
                "use --fresh to start over there, or another output folder"
            )
    if not spec.resume:
        import shutil

        for name in OWNED_OUTPUTS:
            shutil.rmtree(output / name, ignore_errors=True)
        for name in ("manifest.jsonl", "data.yaml", "contact_sheet.jpg", JOB_RECORD, "summary.json"):
            (output / name).unlink(missing_ok=True)
    for leftover in output.rglob(".*.tmp"):  # temp files of a run killed mid-write
        leftover.unlink(missing_ok=True)
    record = {"settings": settings, "formats": list(spec.formats)}
    atomic_write_bytes(record_path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def _frame_instances(frame: SourceFrame, width: int, height: int):
    if frame.label_instances is not None:
        return list(frame.label_instances)
    if frame.yolo_path is not None:
        return read_yolo(frame.yolo_path, width, height)
    return []


def run_job(spec, on_event: Callable[[JobEvent], None] | None = None, cancel: Callable[[], bool] | None = None) -> JobSummary:
    """One job per output folder: refuse an output that would hold the input, take the folder's lock before
    anything is written there (a live holder: JobCannotStart naming it; a dead one's lock is taken over),
    run, and release the lock however the run ends."""
    try:
        check_output_placement(spec.input, spec.output, spec.masks)
        lock = take_output_lock(spec.output, "job", break_lock=spec.break_lock)
    except (InputError, OutputLocked) as exc:
        raise JobCannotStart(str(exc)) from None
    try:
        return _run_job_locked(spec, on_event, cancel, lock.notes)
    finally:
        lock.release()


def _run_job_locked(spec, on_event, cancel, lock_notes: list[str]) -> JobSummary:
    emit = on_event or (lambda event: None)
    cancelled = cancel or (lambda: False)
    started = time.perf_counter()
    try:
        sources = discover(spec.input, spec.masks, spec.labels, spec.split_file, exclude=[spec.output],
                           include_synthetic=spec.include_synthetic)
    except InputError as exc:
        raise JobCannotStart(str(exc)) from None
    if not sources.frames:
        raise JobCannotStart(f"{sources.frames_dir}: no frames found (jpg, jpeg, png, bmp, tif, tiff)")
    settings = spec.settings_that_shape_output()
    # The masks folder actually used, whether given or found (images/ + masks/): the app passes it, the CLI
    # may not, and a resume from either must see the same settings.
    settings["masks"] = str(sources.masks_dir.resolve()) if sources.masks_dir is not None else None
    captions: dict[str, str] = {}
    try:
        pipeline = _open_pipeline(spec)
        if getattr(spec, "captions", None) is not None:
            from engine.pipelines.controlnet import read_captions

            captions = read_captions(spec.captions)
            settings["captions_sha256"] = _file_sha256(spec.captions)
    except PolypForgeError as exc:
        raise JobCannotStart(str(exc)) from None
    settings["bundle_id"] = pipeline.bundle.bundle_id
    proposer = None
    if spec.mask_source == "retrieved":
        try:
            from engine.retrieval import RetrievalProposer

            proposer = RetrievalProposer.open(spec.db, provider=spec.provider, threads=spec.threads)
        except PolypForgeError as exc:
            raise JobCannotStart(str(exc)) from None
        settings["retrieval_db_id"] = proposer.describe()["db_id"]
    _prepare_output(spec, settings)

    summary = JobSummary(status="ok", output=spec.output, notes=[*lock_notes, *sources.notes], provider=pipeline.provider)
    if pipeline.provider_note:
        summary.notes.append(pipeline.provider_note)
    items = plan(sources.frames, spec)
    summary.planned = len(items)
    skipped_splits = sum(1 for f in sources.frames if f.split not in spec.from_splits)
    if skipped_splits:
        summary.notes.append(f"{skipped_splits} frames of splits other than {', '.join(spec.from_splits)} were not used")
    manifest = Manifest(spec.output)
    previous = manifest.index()  # each key's latest status and image, not the records: resume reads 100k lines in seconds
    if previous.damaged:
        summary.notes.append(f"{previous.damaged} damaged manifest line(s) from an interrupted run were dropped")
    done = previous.done_keys(spec.output)
    prompt = spec.prompt or pipeline.prompts["add" if spec.mode == "add" else "remove"]
    if captions:
        from engine.pipelines.controlnet import caption_for

        captioned = sum(1 for rel in {i.frame.rel for i in items} if caption_for(captions, rel) is not None)
        summary.notes.append(f"captions for {captioned} of {len({i.frame.rel for i in items})} frames "
                             f"from {spec.captions}; the others use the prompt {prompt!r}")
    emit(JobEvent("started", total=len(items), message=f"{len(items)} variants of {len({i.frame.rel for i in items})} frames on {pipeline.provider.upper()}"))

    completed = 0
    by_frame: dict[str, list[WorkItem]] = {}
    for item in items:
        by_frame.setdefault(item.frame.rel, []).append(item)
    try:
        for frame_items in by_frame.values():
            pending = [item for item in frame_items if item.key not in done]
            completed += len(frame_items) - len(pending)
            summary.reused += len(frame_items) - len(pending)
            if not pending:
                continue
            if cancelled():
                raise Cancelled("cancelled between frames")
            frame = frame_items[0].frame
            caption = caption_for(captions, frame.rel) if captions else None
            frame_prompt = caption if caption is not None else prompt
            emit(JobEvent("frame", done=completed, total=len(items), frame=frame.rel))
            try:
                pixels = read_frame(frame.path)
                user_mask = None
                if frame.mask_path is not None:
                    user_mask = read_mask(frame.mask_path)
                labels = _frame_instances(frame, pixels.shape[1], pixels.shape[0])
                proposals = proposer.propose(pixels, spec.top_k) if proposer is not None else []
            except PolypForgeError as exc:  # unreadable frame, mask or labels; a retrieval failure on this frame
                for item in pending:
                    completed += 1
                    _record_failure(manifest, summary, item, spec, pipeline, str(exc), emit, completed, len(items))
                continue
            prepared_for = None
            prepared = None
            for item in pending:
                if cancelled():
                    raise Cancelled("cancelled between variants")
                t0 = time.perf_counter()
                # Variants of a frame take the proposals in turn: diversity across variants.
                proposal = proposals[item.variant % len(proposals)] if proposals else None
                try:
                    region = resolve_region(spec.mode, spec.mask_source, pixels, user_mask, labels, spec.box_pad,
                                            item.seed, proposal.box if proposal is not None else None)
                    region_key = region.mask.tobytes() if spec.mask_source in ("random", "retrieved") else "fixed"
                    if prepared is None or prepared_for != region_key:
                        prepared = pipeline.prepare_frame(pixels, region.mask)
                        prepared_for = region_key

                    def on_step(done_steps, total_steps, _item=item, _completed=completed):
                        emit(JobEvent("step", done=_completed, total=len(items), frame=frame.rel,
                                      variant=_item.variant, step=done_steps, steps=total_steps))

                    (result,) = pipeline.generate_variants(
                        prepared, [item.seed], prompt=frame_prompt, negative_prompt=spec.negative_prompt, steps=spec.steps,
                        guidance_scale=spec.guidance, scheduler=spec.scheduler, progress=on_step, cancel=cancelled,
                    )
                except Skip as reason:
                    completed += 1
                    record = _base_record(item, spec, pipeline) | {"status": "skipped", "reason": str(reason)}
                    manifest.append(record)
                    summary.skipped += 1
                    emit(JobEvent("skipped", done=completed, total=len(items), frame=frame.rel, message=str(reason)))
                    continue
                except InputError as exc:
                    completed += 1
                    _record_failure(manifest, summary, item, spec, pipeline, str(exc), emit, completed, len(items))
                    continue
                instances = region.kept + region.generated
                save_png_atomic(spec.output / item.image, result.image)
                instance_map = np.zeros(region.mask.shape, np.uint8)
                for index, instance in enumerate(region.generated, start=1):
                    instance_map[instance.raster(*region.mask.shape) & region.mask] = index
                save_png_atomic(spec.output / item.image.replace("images/", "masks/", 1), instance_map)
                seconds = time.perf_counter() - t0
                record = _base_record(item, spec, pipeline) | {
                    "status": "ok",
                    "mask": item.image.replace("images/", "masks/", 1),
                    "width": int(pixels.shape[1]),
                    "height": int(pixels.shape[0]),
                    "instances": [i.to_json() for i in instances],
                    "removed": [i.to_json() for i in region.removed],
                    "prompt": result.settings["prompt"],
                    "prompt_source": "captions" if caption is not None else ("job" if spec.prompt else "bundle"),
                    "negative_prompt": result.settings["negative_prompt"],
                    "steps": result.settings["steps"],
                    "scheduler": result.settings["scheduler"],
                    "guidance": result.settings["guidance_scale"],
                    "working_size": result.settings["working_size"],
                    "feather_px": result.settings["feather_px"],
                    "provider": pipeline.provider,
                    "seconds": round(seconds, 3),
                }
                if pipeline.bundle.kind == "sd-controlnet":
                    record["bundle_kind"] = "sd-controlnet"
                    record["conditioning_scale"] = result.settings["conditioning_scale"]
                    if captions:
                        record["captions"] = str(spec.captions)
                if proposal is not None:
                    record["retrieval"] = {"db": str(spec.db), "db_id": settings["retrieval_db_id"],
                                           "proposal": proposal.to_json()}
                manifest.append(record)
                summary.ok += 1
                completed += 1
                emit(JobEvent("variant", done=completed, total=len(items), frame=frame.rel, variant=item.variant,
                              seconds=seconds, path=str(spec.output / item.image)))
    except Cancelled:
        summary.status = "cancelled"
    finally:
        tally = _finish(spec, manifest, items, sources)
        summary.ok = tally.counts.get("ok", 0)
        summary.failed = tally.counts.get("failed", 0)
        summary.skipped = tally.counts.get("skipped", 0)
        summary.failures = tally.failures
        summary.stage_seconds = {k: round(v, 3) for k, v in pipeline.stage_seconds.items()}
        summary.seconds = round(time.perf_counter() - started, 3)
        if summary.status != "cancelled" and summary.failed:
            summary.status = "failures"
        atomic_write_bytes(spec.output / "summary.json", (json.dumps(summary.to_json(), indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    emit(JobEvent("finished", done=completed, total=len(items), message=summary.status))
    return summary


def _open_pipeline(spec):
    """The pipeline of the bundle's kind: sd-inpaint → InpaintPipeline, sd-controlnet → ControlNetPipeline."""
    from engine.bundle import read_bundle

    kind = read_bundle(spec.model, verify_hashes=False).kind
    if kind == "sd-controlnet":
        if spec.mode != "add":
            raise InputError(f"{spec.model}: an sd-controlnet bundle generates polyps at a mask (mode add); "
                             "mode remove needs an sd-inpaint bundle")
        from engine.pipelines.controlnet import ControlNetPipeline

        return ControlNetPipeline.from_bundle(spec.model, provider=spec.provider, threads=spec.threads)
    if getattr(spec, "captions", None) is not None:
        raise InputError(f"{spec.captions}: per-frame captions need an sd-controlnet bundle; {spec.model} is {kind}")
    return InpaintPipeline.from_bundle(spec.model, provider=spec.provider, threads=spec.threads)


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _base_record(item: WorkItem, spec, pipeline) -> dict:
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
        "source_sha256": _file_sha256(frame.path),
        "mask_file": frame.mask_path.relative_to(spec.input).as_posix() if frame.mask_path is not None and frame.mask_path.is_relative_to(spec.input) else (str(frame.mask_path) if frame.mask_path else None),
        "label_source": frame.label_source,
        **({"source_synthetic": frame.made_by} if frame.made_by else {}),  # an earlier job's variant, not a real frame
        "bundle": pipeline.bundle.name,
        "bundle_id": pipeline.bundle.bundle_id,
        "engine_version": __version__,
    }


def _record_failure(manifest, summary, item, spec, pipeline, reason, emit, completed, total) -> None:
    manifest.append(_base_record(item, spec, pipeline) | {"status": "failed", "reason": reason})
    summary.failed += 1
    emit(JobEvent("failed", done=completed, total=total, frame=item.frame.rel, message=reason))


def _finish(spec, manifest: Manifest, items: list[WorkItem], sources):
    """Rewrite the manifest in plan order and rebuild every annotation file from it, streamed."""
    tally = manifest.rewrite_in_order(item.key for item in items)  # later lines win (a retried failure, a redone variant)
    rebuild_outputs(spec.output, manifest.records(), spec.formats, {f.rel: f.path for f in sources.frames})
    return tally
