"""Where the app remembers things between sessions (QSettings), and the job settings and Evaluate… form it
remembers.

``open_settings()`` uses ``$POLYPFORGE_SETTINGS`` (an .ini file) when set — the tests and the screenshot
script point it at a temporary file, so they never touch the real curator's settings — and the per-user
INI location otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from PySide6.QtCore import QSettings

from engine.errors import InputError
from engine.jobs.spec import default_mask_source
from engine.pipelines.guidance import parse_guidance_interval
from engine.transplant import DEFAULT_STRENGTH

ORGANISATION = "PolypForge"
APPLICATION = "PolypForge"
SETTINGS_ENV = "POLYPFORGE_SETTINGS"

MASK_SOURCES = ("user", "box", "random", "retrieved")
MODES = ("add", "remove", "transplant")
HARMONIZE = ("model", "poisson", "none")  # engine.transplant.HARMONIZE_MODES, the default first
SCHEDULERS = ("", "ddim", "dpm++")  # "" = the bundle's default
FORMATS = ("coco", "yolo", "yolo-seg")
PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")


def open_settings() -> QSettings:
    override = os.environ.get(SETTINGS_ENV)
    if override:
        return QSettings(override, QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION)


@dataclass
class JobSettings:
    """The job settings the curator picks in the window; None/"" means "the bundle's default"."""

    output: str = ""
    model: str = ""
    provider: str = "auto"
    # the engine's default for the default mode (random to add); the panel switches to "user" for remove and transplant
    mask_source: str = default_mask_source("add")
    box_pad: int = 15
    mode: str = "add"
    harmonize: str = "model"  # mode transplant: model (the default), poisson or none (copy-paste)
    strength: float = DEFAULT_STRENGTH  # mode transplant, harmonize model: how far the paste is re-noised
    variants: int = 1
    seed: int = 0
    steps: int | None = None
    scheduler: str = ""
    guidance: float | None = None
    prompt: str = ""  # "" = the bundle's prompt for the mode ("Polyp" / "Normal")
    captions: str = ""  # per-frame prompts for an sd-controlnet bundle (CSV or JSONL), "" = none
    # mode add, a bundle trained with attributes: "auto" (drawn per variant), "none" or words ("red,lobulated")
    attributes: str = "auto"
    # mode add, a bundle trained with attributes: the asked attributes' own guidance (None: as hard as `guidance`)
    attribute_guidance: float | None = None
    # ... on this share of the steps, the noisiest (None: the model's default; engine ATTRIBUTE_GUIDANCE_UNTIL)
    attribute_guidance_until: float | None = None
    # mode add or remove: guide only on this share of the steps, "A-B" (0 = the noisiest); "" = every step
    guidance_interval: str = ""
    formats: list[str] = field(default_factory=lambda: list(FORMATS))
    resume: bool = True
    inpaint_area: str = ""  # "" = the bundle's default; "frame" | "region"
    region_padding: int | None = None  # None = automatic (30 % of the mask box's longer side)
    working_size: int | None = None  # None = the bundle's image size (64² for the compact model)
    # the polyp judge (batch job --judge): variants it disagrees with are rejected, and regenerated with the next
    # seeds up to max_attempts
    use_judge: bool = False
    # without a judge of its own: the judge the model recommends for the mode (the default model: the polyp judge
    # for add, up to 4 attempts; engine.judge.model_gate), as main.py --batch does unless --no-judge
    model_judge: bool = True
    # mode remove: a fill darker than the mucosa around it is painted again (engine.judge.mucosa_check), as main.py
    # --batch does unless --no-mucosa-check
    mucosa_check: bool = True
    judge: str = "polyp-judge"  # a "segmenter" bundle: a name in exported_models/ or a folder
    min_judge_score: float = 0.5
    max_attempts: int = 3

    def spec_values(self, input_dir: Path, masks_dir: Path | None) -> dict:
        """Keys for engine.jobs.build_spec (validation, with clear messages, is the engine's)."""
        values = {
            "input": str(input_dir),
            "output": self.output.strip() or None,
            "provider": self.provider,
            "mask_source": self.mask_source,
            "box_pad": self.box_pad,
            "mode": self.mode,
            "variants": self.variants,
            "seed": self.seed,
            "steps": self.steps,
            "scheduler": self.scheduler or None,
            "guidance": self.guidance,
            "formats": list(self.formats),
            "resume": self.resume,
            "prompt": self.prompt.strip() or None,
            "captions": self.captions.strip() or None,
            "inpaint_area": self.inpaint_area or None,
            "region_padding": self.region_padding,
            "working_size": self.working_size,
        }
        if self.mode == "add":  # removal stays a prompt; a transplant moves real polyps
            values["attributes"] = self.attributes.strip() or "auto"
            values["attribute_guidance"] = self.attribute_guidance
            if self.attribute_guidance is not None:
                values["attribute_guidance_until"] = self.attribute_guidance_until
        if self.mode != "transplant" and self.guidance_interval.strip():  # a transplant moves real polyps
            values["guidance_interval"] = self.guidance_interval.strip()
        if self.mode == "remove":
            values["mucosa_check"] = self.mucosa_check
        if self.mode == "transplant":
            values["harmonize"] = self.harmonize
            if self.harmonize == "model":
                values["strength"] = self.strength
        if self.use_judge and self.judge.strip():
            values.update(judge=self.judge.strip(), min_judge_score=self.min_judge_score, max_attempts=self.max_attempts)
        else:
            values["model_judge"] = self.model_judge
        if self.model:
            values["model"] = self.model
        if masks_dir is not None:
            values["masks"] = str(masks_dir)
        return values

    # ------------------------------------------------------------------ QSettings
    def save(self, settings: QSettings) -> None:
        settings.beginGroup("job")
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                settings.remove(f.name)
            elif isinstance(value, list):
                settings.setValue(f.name, ",".join(value))
            elif isinstance(value, bool):
                settings.setValue(f.name, "true" if value else "false")
            else:
                settings.setValue(f.name, value)
        settings.endGroup()
        settings.sync()

    @classmethod
    def load(cls, settings: QSettings) -> JobSettings:
        """What was saved, each value checked; anything unreadable falls back to its default."""
        result = cls()
        settings.beginGroup("job")
        try:
            for f in fields(result):
                if not settings.contains(f.name):
                    continue
                raw = settings.value(f.name)
                default = getattr(result, f.name)
                try:
                    setattr(result, f.name, _parse(f.name, raw, default))
                except (TypeError, ValueError, InputError):
                    pass
        finally:
            settings.endGroup()
        return result


def _parse(name: str, raw, default):
    text = "" if raw is None else str(raw)
    if name in ("steps",):
        value = int(text)
        return value if value >= 1 else None
    if name == "region_padding":
        value = int(text)
        return value if value >= 0 else None
    if name == "working_size":
        value = int(text)
        return value if value > 0 else None
    if name in ("guidance", "attribute_guidance"):
        value = float(text)
        return value if 0.0 <= value <= 50.0 else None
    if name == "attribute_guidance_until":
        value = float(text)
        return value if 0.0 < value <= 1.0 else None
    if name == "guidance_interval":  # checked as the engine checks it; unreadable: every step
        parse_guidance_interval(text.strip() or None)
        return text.strip()
    if name in ("variants", "seed", "box_pad"):
        value = int(text)
        if value < (1 if name == "variants" else 0):
            raise ValueError(name)
        return value
    if name == "max_attempts":
        value = int(text)
        if not 1 <= value <= 20:
            raise ValueError(name)
        return value
    if name in ("strength", "min_judge_score"):  # shares of 1; a strength of 0 would change nothing
        value = float(text)
        if not (0.0 < value if name == "strength" else 0.0 <= value) or value > 1.0:
            raise ValueError(name)
        return value
    if name in ("resume", "use_judge", "model_judge", "mucosa_check"):
        return text.lower() in ("true", "1", "yes")
    if name == "formats":
        values = [v for v in (raw if isinstance(raw, list) else text.split(",")) if v in FORMATS]
        return values or default
    choices = {"mask_source": MASK_SOURCES, "mode": MODES, "harmonize": HARMONIZE, "scheduler": SCHEDULERS,
               "provider": PROVIDERS,
               "inpaint_area": ("", "frame", "region")}
    if name in choices and text not in choices[name]:
        raise ValueError(name)
    return text


@dataclass
class EvaluationForm:
    """The Evaluate… dialog's fields (desktop.views.evaluation_dialog); 0 and "" mean "the engine's default".

    ``fresh`` (start over, discarding what the output folder holds) is never remembered: a remembered tick would
    throw away hours of finished runs at the next start."""

    tests: str = ""  # one test folder a line: NAME=DIR, or DIR (named by its folder)
    normals: str = ""  # polyp-free frames, "" = none
    output: str = ""  # "" = beside the dataset: <dataset>-evaluation
    fractions: str = ""  # comma-separated shares of the training frames, "" = the engine's
    seeds: int = 0
    subset_draws: int = 0  # 0 = one curve on the fixed subset; N = the curve on N subset draws, compared over them
    max_steps: int = 0
    threads: int = 0  # 0 = all cores
    synthetic_arm: bool = True  # "PolypForge synthetic": the app's generation settings as a job file
    copy_paste_arm: bool = True  # the honest baseline: the subset's own polyps pasted elsewhere, no model
    transplant_arm: bool = False  # moved polyps redrawn by the model at strength 0.3
    judged_arm: bool = False  # the synthetic arm keeping only the variants the polyp judge finds
    removal_arm: bool = False  # the subset's polyps removed: do removals lower false positives on polyp-free frames?
    mixed_arm: bool = False  # half copy-paste, half judge-kept synthetic: does the generator add to copy-paste?
    fresh: bool = False

    def save(self, settings: QSettings) -> None:
        settings.beginGroup("evaluation")
        for f in fields(self):
            if f.name == "fresh":
                continue
            value = getattr(self, f.name)
            settings.setValue(f.name, ("true" if value else "false") if isinstance(value, bool) else value)
        settings.endGroup()
        settings.sync()

    @classmethod
    def load(cls, settings: QSettings) -> EvaluationForm:
        """What was saved, each value checked; anything unreadable falls back to its default."""
        result = cls()
        settings.beginGroup("evaluation")
        try:
            for f in fields(result):
                if f.name == "fresh" or not settings.contains(f.name):
                    continue
                raw = settings.value(f.name)
                default = getattr(result, f.name)
                text = "" if raw is None else str(raw)
                try:
                    if isinstance(default, bool):
                        value = text.lower() in ("true", "1", "yes")
                    elif isinstance(default, int):
                        value = int(text)
                        if value < 0:
                            raise ValueError(f.name)
                    else:
                        value = text
                except (TypeError, ValueError):
                    continue
                setattr(result, f.name, value)
        finally:
            settings.endGroup()
        return result
