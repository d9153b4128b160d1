"""JobSpec: everything a batch job needs, typed and validated; readable from a TOML job file.

The desktop app and ``main.py --batch`` build the same JobSpec. Unknown keys are an error (a typo in a job
file must not silently fall back to a default), and so is a value of the wrong type or out of range.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.bundle.format import shipped_bundles_folder
from engine.captioning.conditioning import parse_attributes
from engine.errors import InputError
from engine.masks.size_prior import parse_sizes
from engine.masks.sources import MASK_SOURCES, MODES
from engine.pipelines.blending import BLEND_MODES
from engine.pipelines.framing import INPAINT_AREAS
from engine.pipelines.guidance import attribute_guidance_share, parse_guidance_interval
from engine.schedulers import SCHEDULER_NAMES
from engine.transplant import DEFAULT_HARMONIZE, DEFAULT_STRENGTH, HARMONIZE_MODES

JOB_MODES = (*MODES, "transplant")  # transplant: the input's own polyps moved to new places (engine.transplant)
FORMATS = ("coco", "yolo", "yolo-seg")
PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
SPLITS = ("train", "val", "test")
BACKENDS = ("local", "ray")
MIN_WORKING_SIZE, MAX_WORKING_SIZE = 16, 2048  # --working-size, pixels per side
# The compact polyp model PolypForge trains itself (a pixel-inpaint bundle, MODEL_CARD.md inside):
# exported_models/polypforge-compact in the source tree; <app dir>/models/polypforge-compact in a built app.
# The random-weight demo bundles (demo-sd-inpaint, demo-sd-controlnet, demo-dinov2) stay for the tests.
DEFAULT_MODEL = shipped_bundles_folder() / "polypforge-compact"


@dataclass
class JobSpec:
    input: Path
    output: Path
    model: Path = DEFAULT_MODEL
    provider: str = "auto"
    threads: int | None = None
    masks: Path | None = None
    labels: Path | None = None
    split_file: Path | None = None
    from_splits: list[str] = field(default_factory=lambda: ["train"])
    # Where each variant is painted: "random" (new polyps on free mucosa beside the frame's own, whose labels are
    # kept), "user" (the frame's own masks: an add paints over the real polyp there), "box", "retrieved". None: random
    # to add (what the learning curve supports, docs/evaluation.md), the frame's own masks to remove or transplant.
    mask_source: str | None = None
    db: Path | None = None  # retrieval database, for mask_source "retrieved"
    top_k: int = 5  # retrieval candidates per frame
    box_pad: int = 15
    # New polyps' sizes (random masks, transplants): "all" (the input's own polyps', else the Kvasir-SEG prior),
    # "small" (< 5 % of the frame), "large" (> 20 %) or a range of percent of the frame such as "2-10"
    # (engine.masks.size_prior).
    sizes: str = "all"
    mode: str = "add"
    # mode transplant: how a moved polyp joins its new place — "none" (copy-paste), "poisson", or "model" (the
    # bundle re-noises the paste and a band around it to `strength` and denoises it); None: "model"
    harmonize: str | None = None
    strength: float | None = None  # None: engine.transplant.DEFAULT_STRENGTH with harmonize "model"
    prompt: str | None = None
    negative_prompt: str | None = None
    captions: Path | None = None  # per-frame prompts (CSV or JSONL: frame stem → text), sd-/pixel-controlnet
    # What a bundle trained with attributes is asked per variant (mode add; engine.jobs.attributes): "auto" (drawn
    # from the input's own polyps, else the Kvasir-SEG prior; nothing for a bundle without attributes), "none",
    # or words such as "red,lobulated" (colour, surface, elevation). Size and outline come from each mask.
    attributes: str = "auto"
    variants: int = 1
    seed: int = 0
    steps: int | None = None
    scheduler: str | None = None
    guidance: float | None = None
    # "A-B": guide only from the A to the B share of the sampling steps (0 = the noisiest), the conditional prediction
    # alone on the others (engine.pipelines.guidance; compact bundles). None: every step.
    guidance_interval: str | None = None
    # A bundle trained with attributes: the asked attributes' own guidance, apart from the label's (three U-Net
    # predictions a step instead of two; engine.pipelines.compact). None: guided with `guidance`, as one pair.
    attribute_guidance: float | None = None
    # ... on this share of the sampling steps, the noisiest (then one guided pair); None: the pipeline's default
    # (engine.pipelines.compact.ATTRIBUTE_GUIDANCE_UNTIL)
    attribute_guidance_until: float | None = None
    formats: list[str] = field(default_factory=lambda: ["coco", "yolo", "yolo-seg"])
    resume: bool = True
    batch_size: int = 1
    inpaint_area: str | None = None  # "frame" | "region"; None: the bundle's default (region for the compact model)
    region_padding: int | None = None  # px around the mask's box in region mode; None: automatic (30 % of its side)
    # The model works at about working_size² pixels of its view (the region crop or the frame), sides a multiple of
    # the bundle's size step; None: the bundle's image size (64 for the compact model, 512 for SD2). Larger sizes
    # paint large regions with more detail, at about (size / image size)² the time per U-Net call.
    working_size: int | None = None
    blend: str | None = None  # "feather" | "poisson" | "mucosa" (engine.pipelines.blending); None: mucosa to remove, feather to add
    # Who runs the frames: "local" (this process) or "ray" (actors on a Ray cluster, engine/jobs/ray_backend.py).
    backend: str = "local"
    ray_address: str | None = None  # join this cluster; None: $RAY_ADDRESS, else a local Ray instance
    workers: int | None = None  # Ray workers; None: as many as the cluster's CPUs (or GPUs) hold
    gpus_per_worker: float = 0.0
    # Build on earlier PolypForge outputs found in the input: their variants become source frames, and each new
    # variant's manifest line records the line that made its (synthetic) source. Off: they are never read.
    include_synthetic: bool = False
    break_lock: bool = False  # take the output folder's lock even from a holder that may still be alive
    judge: Path | None = None  # a "segmenter" bundle: variants it disagrees with are rejected (engine.judge.rejection)
    min_judge_score: float = 0.5  # the judge score a variant needs to be kept
    max_attempts: int = 1  # generations per variant with --judge (the next seeds after a rejection)
    # Without a judge of its own, use the one the model bundle recommends for this mode (engine.judge.model_gate;
    # the default model: the polyp judge for mode add, up to 4 attempts). Off here; on by default in main.py --batch
    # and the app (--no-judge turns it off there).
    model_judge: bool = False
    # Removals (mode remove): a fill more than 15 luma levels darker than the mucosa around it (a dark smudge) is
    # painted again with the next seed, up to max_attempts (4 when not given), then written to rejected/
    # (engine.judge.mucosa_check). Off here; on by default in main.py --batch and the app (--no-mucosa-check).
    mucosa_check: bool = False

    def validate(self) -> "JobSpec":
        _choice("mode", self.mode, JOB_MODES)
        if self.mask_source is None:
            self.mask_source = default_mask_source(self.mode)
        _choice("mask_source", self.mask_source, MASK_SOURCES)
        parse_sizes(self.sizes)
        if self.sizes != "all" and self.mask_source != "random" and self.mode != "transplant":
            raise InputError(f"sizes {self.sizes!r} applies to new polyps only (--mask-source random or "
                             "--mode transplant)")
        self._validate_transplant()
        asked = parse_attributes(self.attributes)
        if isinstance(asked, dict) and self.mode != "add":
            raise InputError(f"attributes {self.attributes!r} apply to mode add only (removal stays a prompt; a "
                             "transplant moves real polyps): leave --attributes out or give auto or none")
        _choice("provider", self.provider, PROVIDERS)
        if self.scheduler is not None:
            _choice("scheduler", self.scheduler, SCHEDULER_NAMES)
        for value in self.formats:
            _choice("formats", value, FORMATS)
        for value in self.from_splits:
            _choice("from_splits", value, SPLITS)
        if not self.from_splits:
            raise InputError("from_splits is empty: name at least one split to derive from (usually train)")
        _at_least("variants", self.variants, 1)
        _at_least("box_pad", self.box_pad, 0)
        _at_least("batch_size", self.batch_size, 1)
        if self.steps is not None:
            _at_least("steps", self.steps, 1)
        if self.threads is not None:
            _at_least("threads", self.threads, 1)
        if self.guidance is not None and not 0.0 <= self.guidance <= 50.0:
            raise InputError(f"guidance must be between 0 and 50, got {self.guidance}")
        if self.attribute_guidance is not None:
            if not 0.0 <= self.attribute_guidance <= 50.0:
                raise InputError(f"attribute_guidance must be between 0 and 50, got {self.attribute_guidance}")
            if self.mode != "add":
                raise InputError("attribute_guidance applies to mode add only (removal stays a prompt; a transplant "
                                 "moves real polyps)")
        if self.guidance_interval is not None:
            parse_guidance_interval(self.guidance_interval)
            if self.mode == "transplant":
                raise InputError("guidance_interval shapes what the model paints: a transplant moves real polyps")
        if self.attribute_guidance_until is not None:
            if self.attribute_guidance is None:
                raise InputError("attribute_guidance_until says on which steps attribute guidance runs: give "
                                 "attribute_guidance too")
            attribute_guidance_share(self.attribute_guidance_until)
        if self.mode == "remove" and self.mask_source == "random":
            raise InputError("mode remove needs to know where the polyp is: use mask_source user or box, not random")
        _at_least("top_k", self.top_k, 1)
        if self.inpaint_area is not None:
            _choice("inpaint_area", self.inpaint_area, INPAINT_AREAS)
        if self.region_padding is not None:
            _at_least("region_padding", self.region_padding, 0)
        if self.working_size is not None and not MIN_WORKING_SIZE <= self.working_size <= MAX_WORKING_SIZE:
            raise InputError(f"working_size must be between {MIN_WORKING_SIZE} and {MAX_WORKING_SIZE} pixels, got "
                             f"{self.working_size}")
        if self.blend is not None:
            _choice("blend", self.blend, BLEND_MODES)
        _choice("backend", self.backend, BACKENDS)
        if self.workers is not None:
            _at_least("workers", self.workers, 1)
        if not 0.0 <= self.gpus_per_worker <= 64.0:
            raise InputError(f"gpus_per_worker must be between 0 and 64, got {self.gpus_per_worker}")
        if self.backend != "ray":
            given = [name for name, value in (("ray_address", self.ray_address), ("workers", self.workers),
                                              ("gpus_per_worker", self.gpus_per_worker)) if value]
            if given:
                raise InputError(f"{', '.join(given)} apply to backend ray only (add --backend ray)")
        if not 0.0 <= float(self.min_judge_score) <= 1.0:
            raise InputError(f"min_judge_score must be between 0 and 1, got {self.min_judge_score}")
        _at_least("max_attempts", self.max_attempts, 1)
        if self.max_attempts > 1 and self.judge is None and not self.model_judge and not self.checks_removals:
            raise InputError("max_attempts > 1 regenerates variants the judge rejects: give --judge BUNDLE too "
                             "(or, for removals, keep the mucosa check on)")
        if self.mask_source == "retrieved" and self.db is None:
            raise InputError("mask_source retrieved needs a retrieval database: --db DB (make one with `main.py db build`)")
        return self

    @property
    def checks_removals(self) -> bool:
        """True when the job's removals get the mucosa check (engine.judge.mucosa_check)."""
        return self.mucosa_check and self.mode == "remove"

    def _validate_transplant(self) -> None:
        if self.mode != "transplant":
            given = [name for name in ("harmonize", "strength") if getattr(self, name) is not None]
            if given:
                raise InputError(f"{', '.join(given)} apply to mode transplant only (add --mode transplant)")
            return
        if self.mask_source != "user":
            raise InputError(f"mode transplant moves the input's own annotated polyps (their masks): mask_source "
                             f"user, not {self.mask_source!r}")
        if self.harmonize is None:
            self.harmonize = DEFAULT_HARMONIZE
        _choice("harmonize", self.harmonize, HARMONIZE_MODES)
        if self.harmonize == "model":
            self.strength = DEFAULT_STRENGTH if self.strength is None else float(self.strength)
            if not 0.0 < self.strength <= 1.0:
                raise InputError(f"strength must be in (0, 1] (how far the model re-noises a paste), got {self.strength}")
        elif self.strength is not None:
            raise InputError(f"strength applies to harmonize model only, not {self.harmonize!r}")

    def settings_that_shape_output(self) -> dict[str, Any]:
        """What must match for a resumed run to continue an earlier one (paths and speed knobs excluded)."""
        data = asdict(self)
        for key in ("output", "provider", "threads", "resume", "batch_size", "formats", "backend", "ray_address",
                    "workers", "gpus_per_worker", "break_lock"):
            data.pop(key)
        for key in ("captions", "inpaint_area", "region_padding", "working_size", "blend", "harmonize", "strength",
                    "attribute_guidance", "attribute_guidance_until", "guidance_interval"):
            if data[key] is None:  # absent, as in jobs written before these existed: they still resume
                data.pop(key)
        if not data["include_synthetic"]:  # likewise for jobs written before it existed
            data.pop("include_synthetic")
        if data["attributes"] == "auto":  # the default, as in jobs written before it existed: they still resume
            data.pop("attributes")
        if data["mask_source"] != "random" and data["mode"] != "transplant":  # sizes shape new polyps only
            data.pop("sizes")
        data.pop("model_judge")  # a request: the judge it resolves to (engine.judge.model_gate) is what shapes output
        if not self.checks_removals:  # off, or not a removal: as jobs written before it existed, they still resume
            data.pop("mucosa_check")
        if data["judge"] is None:  # no judge: its settings shape nothing (the attempts do with the mucosa check)
            for key in ("judge", "min_judge_score") + (() if self.checks_removals else ("max_attempts",)):
                data.pop(key)
        return {k: (str(v.resolve()) if isinstance(v, Path) else v) for k, v in data.items()}


def default_mask_source(mode: str) -> str:
    """The mask source a job of this mode gets when none is asked: new polyps at random places beside the real ones
    to add (over 10 subset draws of 36 real frames they teach a segmenter what pasting the real polyps twice does,
    where repainting the real polyps' own outlines teaches less: docs/evaluation.md, phases 20-39); the frame's own
    masks to remove a polyp or move it."""
    return "random" if mode == "add" else "user"


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise InputError(f"{name} {value!r} is not one of {', '.join(allowed)}")


def _at_least(name: str, value, minimum) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


PATH_FIELDS = {"input", "output", "model", "masks", "labels", "split_file", "db", "captions", "judge"}
LIST_FIELDS = {"formats", "from_splits"}


def _coerce(name: str, value, source: str):
    if value is None:
        return None
    if name in PATH_FIELDS:
        if not isinstance(value, (str, Path)):
            raise InputError(f"{source}: {name} must be a path (text), got {type(value).__name__}")
        return Path(value).expanduser()
    if name == "attributes" and isinstance(value, list):  # a job file's list of words
        if not all(isinstance(v, str) for v in value):
            raise InputError(f"{source}: attributes must be auto, none or words, got {value!r}")
        return ",".join(value)
    if name in LIST_FIELDS:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputError(f"{source}: {name} must be a list of names")
        return value
    expected = {f.name: f.type for f in fields(JobSpec)}[name]
    if "bool" in str(expected):
        if not isinstance(value, bool):
            raise InputError(f"{source}: {name} must be true or false, got {value!r}")
        return value
    if "float" in str(expected):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{source}: {name} must be a number, got {value!r}")
        return float(value)
    if "int" in str(expected):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{source}: {name} must be an integer, got {value!r}")
        return value
    if not isinstance(value, str):
        raise InputError(f"{source}: {name} must be text, got {value!r}")
    return value


def build_spec(values: dict[str, Any], source: str = "job settings") -> JobSpec:
    """A validated JobSpec from a mapping (TOML file contents merged with command-line flags)."""
    known = {f.name for f in fields(JobSpec)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for required in ("input", "output"):
        if values.get(required) is None:
            raise InputError(f"{source}: '{required}' is required")
    coerced = {name: _coerce(name, value, source) for name, value in values.items() if value is not None}
    return JobSpec(**coerced).validate()


def read_job_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: job file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    data = {key.replace("-", "_"): value for key, value in data.items()}
    # Relative paths in a job file are relative to the file, not to where the command runs.
    for key in PATH_FIELDS & set(data):
        if isinstance(data[key], str) and not Path(data[key]).expanduser().is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    return data
