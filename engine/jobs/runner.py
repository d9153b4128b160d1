"""run_job(spec, on_event, cancel): a folder of frames → an annotated, resumable dataset.

plan → schedule → collect → rebuild. Refuse an output folder that would hold the input, take the output
folder's lock (one job per folder; a dead holder's lock is taken over) → discover the input, never entering the
job's own output nor an earlier job's unless asked → check the output folder and the bundle (anything wrong here
stops the job before it starts, with one line) → plan (frame × variant, each with a seed derived from the job
seed, the frame's path and the variant number, so a variant's seed never depends on the other frames, their
order or who runs them) → skip what the manifest already records as done → schedule the frames that have work
left (engine/jobs/frame_work.py does one frame: read once, encode once, generate its variants, write their files
atomically) → collect each variant's record as it comes: append it to the manifest (this process is its only
writer) and emit progress → rebuild COCO, YOLO, data.yaml and the contact sheet from the manifest (streamed) →
release the lock. One bad frame is a failed manifest line, never a stopped job.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine.dataset.discovery import SourceFrame, check_output_placement, discover
from engine.dataset.job_folder import JOB_RECORD
from engine.dataset.manifest import Manifest
from engine.dataset.rebuild import rebuild_outputs
from engine.errors import Cancelled, InputError, OutputLocked, PolypForgeError
from engine.fileio import atomic_write_bytes, save_png_atomic
from engine.jobs.events import JobEvent
from engine.jobs.frame_work import (
    FrameTask,
    FrameWork,
    WorkItem,
    file_sha256,
    frame_instances,
    open_pipeline,
    open_proposer,
)
from engine.jobs.attributes import job_attributes
from engine.jobs.output_lock import take_output_lock
from engine.masks.size_prior import (
    INPUT_SOURCE,
    MIN_INPUT_POLYPS,
    SizeDistribution,
    instance_sizes,
    job_sizes,
    kvasir_seg_prior,
)

OWNED_OUTPUTS = ("images", "masks", "labels", "yolo-seg", "annotations", "rejected")


class JobCannotStart(PolypForgeError):
    """Missing input, unwritable output, bad bundle, settings that contradict an earlier run."""


@dataclass
class JobSummary:
    status: str  # "ok", "failures", "cancelled"
    output: Path
    planned: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    reused: int = 0  # done by an earlier, interrupted run
    rejected: int = 0  # by the judge (--judge) or in the review gallery
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    provider: str = ""
    workers: list[dict] = field(default_factory=list)  # Ray backend: per worker, its node, variants and rate

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


SIZE_SAMPLE_FRAMES = 500  # annotated frames read for an input's polyp sizes, evenly spread over the input


def input_sizes(frames: list[SourceFrame], spec) -> SizeDistribution:
    """The job's polyp size distribution for random masks: the sizes of the input's own polyps (its masks, else
    its labels; a box-only label counts as the ellipse in its box) in the frames the job derives from, read
    from at most SIZE_SAMPLE_FRAMES of them; the Kvasir-SEG prior when they hold fewer than MIN_INPUT_POLYPS
    polyps. Narrowed as the job's ``sizes`` says. An unreadable file is left out here: the frame's own
    variants record the failure."""
    from PIL import Image

    from engine.dataset.image_reader import read_mask

    annotated = [frame for frame in frames if frame.split in spec.from_splits and not frame.made_by
                 and (frame.mask_path or frame.label_instances or frame.yolo_path)]
    sizes: list[float] = []
    for frame in annotated[::max(1, -(-len(annotated) // SIZE_SAMPLE_FRAMES))]:
        try:
            if frame.mask_path is not None:
                sizes.extend(instance_sizes(read_mask(frame.mask_path)))
                continue
            with Image.open(frame.path) as image:
                width, height = image.size
            for instance in frame_instances(frame, width, height):
                sizes.append(instance.area * (math.pi / 4 if instance.shape == "box" else 1.0) / (width * height))
        except (PolypForgeError, OSError):
            continue
    base = SizeDistribution.from_sizes(sizes, INPUT_SOURCE) if len(sizes) >= MIN_INPUT_POLYPS else kvasir_seg_prior()
    return job_sizes(base, spec.sizes)


def _prepare_output(spec, settings: dict, judge_from_model: bool = False) -> None:
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
            # a job written without a judge, resumed now that the model's judge is on by default
            hint = (" (it ran without a judge: --no-judge resumes it as it was)"
                    if judge_from_model and "judge" not in previous else "")
            if (spec.mode == "add" and previous.get("mask_source") == "user" and spec.mask_source == "random"
                    and previous.get("mode", "add") == "add"):  # mode add's default mask source was user until 2026-12
                hint += " (it painted at the frames' own masks: --mask-source user resumes it as it was)"
            if spec.checks_removals and "mucosa_check" not in previous:  # a removal job from before the check
                hint += " (it ran without the mucosa check: --no-mucosa-check resumes it as it was)"
            raise JobCannotStart(
                f"{output}: holds a job made with other settings ({', '.join(changed)}){hint}; "
                "use --fresh to start over there, or another output folder"
            )
    if not spec.resume:
        import shutil

        for name in OWNED_OUTPUTS:
            shutil.rmtree(output / name, ignore_errors=True)
        for name in ("manifest.jsonl", "data.yaml", "contact_sheet.jpg", JOB_RECORD, "summary.json"):
            (output / name).unlink(missing_ok=True)
    sweep_temp_files(output)
    record = {"settings": settings, "formats": list(spec.formats)}
    atomic_write_bytes(record_path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def sweep_temp_files(output: Path) -> int:
    """Remove the temp files of atomic writes (engine.fileio: ``.NAME.<random>.tmp`` beside their target) that
    a process killed mid-write left in the output: at a job's start (an earlier run was killed) and at its end
    (a worker killed during this run). Called only under the output lock, with no writer of this job alive.
    Returns how many were removed."""
    removed = 0
    for leftover in output.rglob(".*.tmp"):
        try:
            leftover.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


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
        from engine.judge.model_gate import with_model_gate

        asked_judge = spec.judge
        spec = with_model_gate(spec)  # the model's recommended judge, when the job asks for it and names none
    except PolypForgeError as exc:
        raise JobCannotStart(str(exc)) from None
    judge_from_model = asked_judge is None and spec.judge is not None
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
        backend = open_backend(spec)  # the local pipeline, or a Ray cluster (the bundle checked here)
        if getattr(spec, "captions", None) is not None:
            from engine.dataset.captions import read_captions

            captions = read_captions(spec.captions)
            settings["captions_sha256"] = file_sha256(spec.captions)
    except PolypForgeError as exc:
        raise JobCannotStart(str(exc)) from None
    settings["bundle_id"] = backend.bundle.bundle_id
    try:
        attributes = job_attributes(sources.frames, spec, backend.bundle)  # None: the bundle takes none
    except InputError as exc:  # asked words the bundle cannot take; the prior's file missing from a damaged install
        raise JobCannotStart(str(exc)) from None
    try:
        from engine.judge.rejection import check_judge

        if spec.judge is not None:
            settings["judge_bundle_id"] = check_judge(spec)
    except PolypForgeError as exc:
        raise JobCannotStart(str(exc)) from None
    proposer = None
    if spec.mask_source == "retrieved":
        try:
            proposer = open_proposer(spec)
        except PolypForgeError as exc:
            raise JobCannotStart(str(exc)) from None
        settings["retrieval_db_id"] = proposer.describe()["db_id"]
    sizes = None
    if spec.mask_source == "random" or spec.mode == "transplant":
        try:
            sizes = input_sizes(sources.frames, spec)
        except InputError as exc:  # the Kvasir-SEG prior's file missing from a damaged install
            raise JobCannotStart(str(exc)) from None
    donors = None
    if spec.mode == "transplant":
        from engine.transplant import DonorPool

        donors = DonorPool.of(sources.frames)  # train frames only: val/test frames stay unseen
        if not donors:
            raise JobCannotStart(f"{spec.input}: mode transplant needs train frames with outlined polyps (mask files "
                                 "or polygon labels) to take donors from; none found")
    _prepare_output(spec, settings, judge_from_model=judge_from_model)
    try:
        backend.check_output(spec)  # Ray: every worker node sees and writes the output folder
    except PolypForgeError as exc:
        raise JobCannotStart(str(exc)) from None

    summary = JobSummary(status="ok", output=spec.output, notes=[*lock_notes, *sources.notes], provider=backend.provider)
    summary.notes.extend(backend.notes)
    if sizes is not None:
        summary.notes.append(f"{'transplanted' if donors is not None else 'random masks'}' polyp sizes: {sizes.source}")
    if attributes is not None:
        summary.notes.append(attributes.describe())
    if spec.judge is not None:
        whose = "the model's recommended judge" if judge_from_model else "judge"
        summary.notes.append(f"{whose} {Path(spec.judge).name}: variants it does not agree with (score < "
                             f"{spec.min_judge_score:g}) are made again, up to {spec.max_attempts} attempt(s), then go to "
                             "rejected/" + (" (--no-judge keeps every variant)" if judge_from_model else ""))
    if spec.checks_removals:
        from engine.judge.mucosa_check import default_check
        from engine.judge.rejection import attempts_of

        summary.notes.append(f"mucosa check: a removal whose fill is more than {default_check().max_darkness:g} luma "
                             f"levels darker than the mucosa around it is painted again, up to {attempts_of(spec)} "
                             "attempt(s), then goes to rejected/ (--no-mucosa-check keeps every removal)")
    if donors is not None:
        summary.notes.append(f"donor polyps from {len(donors)} train frames; harmonize {spec.harmonize}"
                             + (f" at strength {spec.strength:g}" if spec.strength is not None else ""))
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
    prompt = spec.prompt or backend.prompts["remove" if spec.mode == "remove" else "add"]
    if captions:
        from engine.dataset.captions import caption_for

        captioned = sum(1 for rel in {i.frame.rel for i in items} if caption_for(captions, rel) is not None)
        summary.notes.append(f"captions for {captioned} of {len({i.frame.rel for i in items})} frames "
                             f"from {spec.captions}; the others use the prompt {prompt!r}")
    emit(JobEvent("started", total=len(items), message=f"{len(items)} variants of {len({i.frame.rel for i in items})} frames on {backend.describe()}"))

    tasks = frame_tasks(items, done, prompt, captions, spec, sizes, donors, attributes)
    collect = RecordCollector(manifest, emit, total=len(items), done=len(items) - sum(len(t.items) for t in tasks))
    summary.reused = collect.done
    try:
        backend.run(tasks, collect, cancelled, proposer=proposer, retrieval_db_id=settings.get("retrieval_db_id"),
                    captions_file=spec.captions if captions else None)
    except Cancelled:
        summary.status = "cancelled"
    finally:
        half_written = sweep_temp_files(spec.output)  # what a worker killed mid-write left behind
        if half_written:
            summary.notes.append(f"{half_written} half-written file(s) of a writer killed mid-write were removed "
                                 "(its variants were made again or are listed as failed)")
        tally = _finish(spec, manifest, items, sources)
        summary.ok = tally.counts.get("ok", 0)
        summary.failed = tally.counts.get("failed", 0)
        summary.skipped = tally.counts.get("skipped", 0)
        summary.rejected = tally.counts.get("rejected", 0)
        summary.notes.extend(closing_notes(spec, manifest))
        summary.failures = tally.failures
        summary.stage_seconds = {k: round(v, 3) for k, v in backend.stage_seconds().items()}
        backend.finish(summary)
        summary.seconds = round(time.perf_counter() - started, 3)
        if summary.status != "cancelled" and summary.failed:
            summary.status = "failures"
        atomic_write_bytes(spec.output / "summary.json", (json.dumps(summary.to_json(), indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    emit(JobEvent("finished", done=collect.done, total=len(items), message=summary.status))
    return summary


def frame_tasks(items: list[WorkItem], done: dict, prompt: str, captions: dict[str, str], spec,
                sizes: SizeDistribution | None = None, donors=None, attributes=None) -> list[FrameTask]:
    """The frames with variants left to make, in plan order, each with its variants, prompt and (random masks,
    transplants) the job's polyp size distribution, (transplants) the donor pool and (a bundle trained with
    attributes) the job's attribute plan."""
    by_frame: dict[str, list[WorkItem]] = {}
    for item in items:
        by_frame.setdefault(item.frame.rel, []).append(item)
    tasks = []
    for frame_items in by_frame.values():
        pending = [item for item in frame_items if item.key not in done]
        if not pending:
            continue
        frame = frame_items[0].frame
        caption = None
        if captions:
            from engine.dataset.captions import caption_for

            caption = caption_for(captions, frame.rel)
        source = "captions" if caption is not None else ("job" if spec.prompt else "bundle")
        tasks.append(FrameTask(frame, pending, caption if caption is not None else prompt, source, sizes, donors,
                               attributes))
    return tasks


class RecordCollector:
    """Where finished variants arrive, from any scheduler: the manifest line is appended (and fsynced) first,
    then the progress event. ``done`` counts variants finished, this run and earlier ones."""

    def __init__(self, manifest: Manifest, emit: Callable[[JobEvent], None], total: int, done: int = 0):
        self.manifest = manifest
        self.emit = emit
        self.total = total
        self.done = done

    def frame_started(self, frame_rel: str, worker: str = "") -> None:
        self.emit(JobEvent("frame", done=self.done, total=self.total, frame=frame_rel, worker=worker))

    def step(self, item: WorkItem, step: int, steps: int) -> None:
        self.step_of(item.frame.rel, item.variant, step, steps)

    def step_of(self, frame_rel: str, variant: int, step: int, steps: int, worker: str = "") -> None:
        self.emit(JobEvent("step", done=self.done, total=self.total, frame=frame_rel, variant=variant,
                           step=step, steps=steps, worker=worker))

    def __call__(self, record: dict) -> None:
        self.manifest.append(record)
        self.done += 1
        status = record["status"]
        worker = record.get("worker")
        label = f"{worker['host']}:{worker['pid']}" if worker else ""
        if status == "ok":
            self.emit(JobEvent("variant", done=self.done, total=self.total, frame=record["source_frame"],
                               variant=record["variant"], seconds=record["seconds"],
                               path=str(self.manifest.path.parent / record["image"]), worker=label))
        else:
            message = record["reason"]
            if status == "rejected" and record.get("reason") == "judge":  # by the judge (--judge)
                judge = record.get("judge", {})
                message = f"judge score {judge.get('score')} < {judge.get('min_score')} after {len(judge.get('attempts', []))} attempt(s)"
            elif status == "rejected":  # by the mucosa check
                check = record.get("mucosa_check", {})
                message = (f"fill {check.get('darkness')} luma levels against its mucosa (at least "
                           f"-{check.get('max_darkness', 15):g}) after {len(check.get('attempts', []))} attempt(s)")
            self.emit(JobEvent(status, done=self.done, total=self.total, frame=record["source_frame"],
                               variant=record["variant"], message=message, worker=label))


def open_backend(spec):
    """What runs the frames: this process (backend "local"), or Ray actors (backend "ray")."""
    if getattr(spec, "backend", "local") == "ray":
        try:
            from engine.jobs.ray_backend import RayBackend
        except ImportError:  # the offline app is built without it
            raise InputError("this build has no Ray backend: run from a source install with "
                             'pip install -e ".[ray]"') from None
        return RayBackend.connect(spec)
    return LocalBackend(spec)


class LocalBackend:
    """The frames run in this process, one after another, on the pipeline opened here."""

    def __init__(self, spec):
        self.spec = spec
        self.pipeline = open_pipeline(spec)
        self.bundle = self.pipeline.bundle
        self.prompts = self.pipeline.prompts
        self.provider = self.pipeline.provider
        self.notes = [self.pipeline.provider_note] if self.pipeline.provider_note else []

    def describe(self) -> str:
        return self.provider.upper()

    def check_output(self, spec) -> None:
        """Nothing beyond _prepare_output's check: this process is the only writer."""

    def run(self, tasks: list[FrameTask], collect: RecordCollector, cancelled, proposer=None,
            retrieval_db_id: str | None = None, captions_file: Path | None = None) -> None:
        work = FrameWork(self.spec, self.pipeline, proposer, retrieval_db_id, captions_file=captions_file,
                         write_png=save_png_atomic)
        if work.uses_no_model:
            self._run_threaded(work, tasks, collect, cancelled)
            return
        for task in tasks:
            if cancelled():
                raise Cancelled("cancelled between frames")
            collect.frame_started(task.frame.rel)
            work.run(task, collect, on_step=collect.step, cancel=cancelled)

    def _run_threaded(self, work: FrameWork, tasks: list[FrameTask], collect: RecordCollector, cancelled) -> None:
        """Frames whose variants need no model call (copy-paste and Poisson transplants: numpy, OpenCV and PNG
        encoding, which release the GIL) run on ``threads`` threads; each frame's records are handed on in plan
        order once its files exist."""
        def one(task: FrameTask) -> list[dict]:
            if cancelled():
                return []
            records: list[dict] = []
            work.run(task, records.append, cancel=cancelled)
            return records

        with ThreadPoolExecutor(max_workers=self.spec.threads or os.cpu_count() or 1) as pool:
            for task, records in zip(tasks, pool.map(one, tasks)):
                if cancelled():
                    raise Cancelled("cancelled between frames")
                collect.frame_started(task.frame.rel)
                for record in records:
                    collect(record)

    def stage_seconds(self) -> dict[str, float]:
        return self.pipeline.stage_seconds

    def finish(self, summary: "JobSummary") -> None:
        """Nothing to release: the pipeline goes with this object."""


class ReplacedPolyps:
    """A job summary's line, tallied one manifest record at a time: how many variants of an add job were painted over
    a real polyp (its own mask or box: the manifest's "removed"), so that the real polyp is not in them. The learning
    curve's word on them goes with it (docs/evaluation.md, phases 30-39)."""

    def __init__(self):
        self.ok = self.replaced = 0

    def add(self, record: dict) -> None:
        if record.get("status") == "ok":
            self.ok += 1
            self.replaced += bool(record.get("removed"))

    def line(self) -> str | None:
        """None when no variant was."""
        if not self.replaced:
            return None
        return (f"{self.replaced} of {self.ok} variants paint over a real polyp (at its own mask or box), which is then "
                "not in the variant: on the Kvasir-SEG learning curve such variants taught a segmenter about what the "
                "real frames alone do (+0.035 Dice over 10 draws), new polyps beside the real ones (--mask-source "
                "random, add's default) +0.2 (docs/evaluation.md)")


def closing_notes(spec, manifest: Manifest) -> list[str]:
    """The summary's tallies of the finished manifest, in one streamed pass: kept by the judge per size (a judged
    job), the mucosa check's outcomes (a checked removal job), variants painted over a real polyp (add not at random
    masks)."""
    from engine.judge.rejection import KeptBySize, MucosaTally, tally_lines

    wanted = ((spec.judge is not None, KeptBySize), (spec.checks_removals, MucosaTally),
              (spec.mode == "add" and spec.mask_source != "random", ReplacedPolyps))
    tallies = [make() for asked, make in wanted if asked]
    if not tallies:
        return []
    return [line for line in tally_lines(tallies, manifest.records()) if line is not None]


def _finish(spec, manifest: Manifest, items: list[WorkItem], sources):
    """Rewrite the manifest in plan order and rebuild every annotation file from it, streamed."""
    tally = manifest.rewrite_in_order(item.key for item in items)  # later lines win (a retried failure, a redone variant)
    rebuild_outputs(spec.output, manifest.records(), spec.formats, {f.rel: f.path for f in sources.frames})
    return tally
