"""What a learning curve (engine.evaluation.learning_curve) is asked to do and what it will cost: its settings, the
runs they make (fraction × arm × seed), the checks on them, the seconds per training step measured before anything
trains, and the plan printed first (runs, budget, estimate, what a rerun or ``--fresh`` will do)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.evaluation import segdata
from engine.evaluation.curve_arms import REAL, fraction_label

FROM_FOLDERS = "synthetic"  # the arm of --synthetic FRACTION=DIR
DEFAULT_FRACTIONS = (0.1, 0.25)
SMALL_FRACTION = 0.25  # at or below it, more seeds: small subsets vary more from seed to seed
SEEDS_SMALL, SEEDS_LARGE = 5, 3
MAX_STEPS = 1500
PATIENCE = 6
VALIDATE_EVERY = 100
SETTINGS = "evaluation.json"
KIND = "learning-curve"
TIMED_STEPS = 3  # training steps timed for the plan's estimate (after one warm-up step)

@dataclass
class CurveSettings:
    """What ``evaluate`` is asked (the command's flags, or the app's form)."""

    train: Path
    tests: dict[str, Path]  # name → real test frames + masks
    out: Path
    arms: dict[str, Path] = field(default_factory=dict)  # arm name → batch job file, run per fraction
    mixes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # arm name → the arms whose pools it shares
    synthetic: dict[float, Path] = field(default_factory=dict)  # fraction → a synthetic folder (arm "synthetic")
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    seeds: int | None = None  # None: SEEDS_SMALL at fractions ≤ SMALL_FRACTION, else SEEDS_LARGE
    # Which subset of each fraction: 0 the fixed one; k > 0 an independent draw of the same size (its own --out)
    subset_draw: int = 0
    # > 0: the curve on draws 1 … subset_draws, each in OUT/draw-K, compared over draws (engine.evaluation.subset_draws)
    subset_draws: int = 0
    synthetic_ratio: float = 1.0  # synthetic variants per real training frame in an arm's pool
    ratio_ablation: tuple[float, ...] = ()  # other ratios, tried at the smallest fraction
    arm_ratios: dict[str, float] = field(default_factory=dict)  # an arm's own ratio instead of synthetic_ratio
    val: Path | None = None  # real validation frames for every fraction (default: held out of each subset)
    normals: Path | None = None  # polyp-free frames: the false-positive rate
    max_steps: int = MAX_STEPS
    patience: int = PATIENCE
    validate_every: int = VALIDATE_EVERY
    size: int = 128
    batch_size: int = 8
    widths: tuple[int, ...] | None = None  # None: the judge's (engine.models.segmenter.DEFAULT_WIDTHS)
    lr: float = 2e-3
    threads: int | None = None
    fresh: bool = False
    trainer: str = "judge"  # or "ultralytics" (engine.evaluation.ultralytics_trainer)
    ultralytics_epochs: int | None = None
    ultralytics_python: str | None = None
    cache: int = segdata.DEFAULT_CACHE

    @property
    def steps(self) -> int:
        """The step budget the Ultralytics trainer turns into epochs (the same samples as the judge's cap)."""
        return self.max_steps

    def seeds_at(self, fraction: float) -> int:
        if self.seeds is not None:
            return self.seeds
        return SEEDS_SMALL if fraction <= SMALL_FRACTION else SEEDS_LARGE

    def arm_names(self) -> list[str]:
        return [REAL, *([FROM_FOLDERS] if self.synthetic else []), *self.arms, *self.mixes]

    def ratio_of(self, arm: str) -> float | None:
        """Synthetic variants per real frame in the arm's pool (None for the real arm)."""
        return None if arm == REAL else self.arm_ratios.get(arm, self.synthetic_ratio)

    def components(self, arm: str) -> tuple[str, ...]:
        """The arms whose variants make up this arm's pool: a mix's arms, else the arm itself."""
        return self.mixes.get(arm, (arm,))

    def network_widths(self) -> tuple[int, ...]:
        from engine.models.segmenter import DEFAULT_WIDTHS

        return tuple(self.widths or DEFAULT_WIDTHS)

    def judge_task(self, train: segdata.SegmentationSet, val: segdata.SegmentationSet, **options):
        """The downstream segmenter's training task (engine.evaluation.judge_task; torch is imported here)."""
        from engine.evaluation.judge_task import JudgeTask

        return JudgeTask(train, val, size=self.size, batch_size=self.batch_size, widths=self.network_widths(),
                         **options)

    def trainer_settings(self) -> dict:
        """The downstream model and its budget: the same for every run, recorded in each results file."""
        if self.trainer == "ultralytics":
            from engine.evaluation.ultralytics_trainer import describe

            return describe(self)
        return {"name": "judge", "description": "the judge's compact U-Net trained from scratch",
                "size": self.size, "batch_size": self.batch_size, "widths": list(self.network_widths()), "lr": self.lr,
                "max_steps": self.max_steps, "validate_every": self.validate_every, "patience": self.patience,
                "stopping": f"validation Dice every {self.validate_every} steps; stop after {self.patience} "
                            f"validations without a better one, at most {self.max_steps} steps; the best "
                            "validation's weights are scored", "cache": self.cache, "threshold": 0.5}


@dataclass(frozen=True)
class PlannedRun:
    fraction: float
    arm: str
    seed: int
    ratio: float | None = None  # synthetic variants per real frame; None for the real arm
    ablation: bool = False  # a ratio other than the settings' (the ratio ablation)

    @property
    def series(self) -> str:
        """The line of the curve (or row of the ablation) this run belongs to."""
        return f"{self.arm} ×{self.ratio:g}" if self.ablation else self.arm

    @property
    def name(self) -> str:
        arm = f"{self.arm}-ratio{self.ratio:g}" if self.ablation else self.arm
        return f"{arm.replace('+', '-').replace(' ', '_')}-seed{self.seed}"

    def result_path(self, out: Path) -> Path:
        return Path(out) / "results" / fraction_label(self.fraction) / f"{self.name}.json"

    def run_dir(self, out: Path) -> Path:
        return Path(out) / "runs" / fraction_label(self.fraction) / self.name


@dataclass
class CurveProgress:
    """A progress event: where the evaluation stands (steps are training steps, counted against the step caps)."""

    phase: str  # "generate", "train", "score", "done"
    run: str | None  # "<fraction>/<arm>-seed<k>"
    steps_done: int
    steps_total: int  # the caps of the runs left, shrinking as runs stop early
    eta_seconds: float | None
    message: str = ""


def plan_runs(settings: CurveSettings) -> list[PlannedRun]:
    """Every run, in the order they train: by fraction, then seed, then arm (a seed's arms side by side, so paired
    differences appear early), then the ratio ablation at the smallest fraction."""
    runs = []
    fractions = sorted(settings.fractions)
    for fraction in fractions:
        for seed in range(settings.seeds_at(fraction)):
            for arm in settings.arm_names():
                runs.append(PlannedRun(fraction, arm, seed, settings.ratio_of(arm)))
    smallest = fractions[0]
    for ratio in settings.ratio_ablation:
        for seed in range(settings.seeds_at(smallest)):
            for arm in settings.arm_names()[1:]:
                if ratio != settings.ratio_of(arm):  # an arm's own ratio is its curve's, not an ablation's
                    runs.append(PlannedRun(smallest, arm, seed, ratio, ablation=True))
    return runs


def check_settings(settings: CurveSettings) -> None:
    """One-line refusals of settings that cannot be run, before anything is read."""
    if not settings.tests:
        raise InputError("give at least one --test DIR")
    for name, folder in settings.tests.items():
        if not Path(folder).is_dir():
            raise InputError(f"--test {name}={folder}: test folder not found")
    if not settings.fractions or any(not 0.0 < f <= 1.0 for f in settings.fractions):
        raise InputError(f"--real-fractions {settings.fractions}: each must be in (0, 1]")
    if not isinstance(settings.subset_draw, int) or settings.subset_draw < 0:
        raise InputError(f"--subset-draw {settings.subset_draw}: must be a whole number, 0 or more")
    if REAL in settings.arms or (settings.synthetic and FROM_FOLDERS in settings.arms):
        raise InputError(f"--arm: the name {REAL if REAL in settings.arms else FROM_FOLDERS!r} is taken; pick another")
    missing = sorted(set(settings.fractions) - set(settings.synthetic)) if settings.synthetic else []
    if missing:
        raise InputError(f"--synthetic: no folder for fraction {', '.join(fraction_label(f) for f in missing)} (give "
                         "FRACTION=DIR for each of --real-fractions)")
    extra = sorted(set(settings.synthetic) - set(settings.fractions))
    if extra:
        raise InputError(f"--synthetic {fraction_label(extra[0])}=…: not one of --real-fractions")
    if settings.synthetic_ratio < 0 or any(r < 0 for r in settings.ratio_ablation):
        raise InputError("--synthetic-ratio and --ratio-ablation must not be negative")
    _check_mixes(settings)
    for arm, ratio in settings.arm_ratios.items():
        if arm == REAL or arm not in settings.arm_names():
            raise InputError(f"--arm-ratio {arm}={ratio:g}: no arm {arm!r} (arms: "
                             f"{', '.join(settings.arm_names()[1:]) or 'none'})")
        if ratio < 0:
            raise InputError(f"--arm-ratio {arm}={ratio:g}: must not be negative")
    if settings.trainer not in ("judge", "ultralytics"):
        raise InputError(f"--trainer {settings.trainer}: not one of judge, ultralytics")
    for arm, job in settings.arms.items():
        if not Path(job).is_file():
            raise InputError(f"--arm {arm}={job}: job file not found")


def _check_mixes(settings: CurveSettings) -> None:
    """A mix names two or more different arms that make their own variants (a job file, or the --synthetic folders),
    under a name no other arm has."""
    own = [arm for arm in settings.arm_names() if arm != REAL and arm not in settings.mixes]
    for name, parts in settings.mixes.items():
        if name in (REAL, FROM_FOLDERS) or name in settings.arms:
            raise InputError(f"--mix {name}=…: the name {name!r} is taken by another arm; pick another")
        if len(parts) < 2 or len(set(parts)) != len(parts):
            raise InputError(f"--mix {name}={'+'.join(parts)}: name two or more different arms, e.g. "
                             "copy-paste+synthetic-judged")
        unknown = [part for part in parts if part not in own]
        if unknown:
            raise InputError(f"--mix {name}={'+'.join(parts)}: {', '.join(unknown)} is not an arm with variants of its "
                             f"own (given by --arm, --generate or --synthetic: {', '.join(own) or 'none'})")


def measure_seconds_per_step(settings: CurveSettings, train: segdata.SegmentationSet, steps: int = TIMED_STEPS) -> float:
    """Seconds per training step of the downstream segmenter on this machine at these settings (forward,
    backward, optimiser; one warm-up step first)."""
    import torch

    task = settings.judge_task(train, train.subset([]))
    torch.manual_seed(0)
    net = task.build_model()
    optimiser = torch.optim.AdamW(net.parameters(), lr=settings.lr)
    started = 0.0
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        loss, _ = task.loss(net, task.make_batch(step, np.random.default_rng(step)), None)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (time.perf_counter() - started) / steps


def _state(run: PlannedRun, out: Path) -> str:
    if run.result_path(out).is_file():
        return "done"
    if (run.run_dir(out) / "checkpoints").is_dir() and any((run.run_dir(out) / "checkpoints").iterdir()):
        return "partial"
    return "new"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def describe_plan(settings: CurveSettings, runs: list[PlannedRun], seconds_per_step: float | None,
                  threads: int) -> list[str]:
    """The plan in words: the runs, the budget, the time it may take, and what the folder already holds."""
    fractions = sorted(settings.fractions)
    seeds = sorted({settings.seeds_at(f) for f in fractions})
    lines = [f"plan: {len(fractions)} fraction(s) ({', '.join(fraction_label(f) for f in fractions)}) × "
             f"{len(settings.arm_names())} arm(s) ({', '.join(settings.arm_names())}) × "
             f"{'/'.join(str(s) for s in seeds)} seed(s)"
             + (f" + the ratio ablation ({', '.join(f'{r:g}' for r in settings.ratio_ablation)}) at "
                f"{fraction_label(fractions[0])}" if settings.ratio_ablation else "")
             + f" = {len(runs)} runs"]
    for arm in settings.arm_names()[1:]:
        if arm in settings.mixes or arm in settings.arm_ratios:
            lines.append(f"  {arm}: {settings.ratio_of(arm):g} synthetic per real frame"
                         + (f", drawn equally from the pools of {', '.join(settings.mixes[arm])}"
                            if arm in settings.mixes else ""))
    budget = settings.trainer_settings()
    if settings.trainer == "judge":
        lines.append(f"  budget per run: {budget['stopping']}; batches of {settings.batch_size} at {settings.size}²")
    states = ["new"] * len(runs) if settings.fresh else [_state(run, settings.out) for run in runs]
    to_train = states.count("new") + states.count("partial")
    if seconds_per_step is not None:
        most = _duration(to_train * settings.max_steps * seconds_per_step)
        lines.append(f"  time: {seconds_per_step:.3f} s per step measured here ({threads} thread(s)) → at most {most} "
                     f"for the {to_train} run(s) to train, at the step cap (early stopping ends most sooner), plus "
                     "scoring and the arms' batch jobs")
    if settings.fresh:
        lines.append(f"  --fresh: what {settings.out} holds (runs, results, generated arms, report) is discarded first")
    else:
        lines.append(f"  in {settings.out}: {states.count('done')} run(s) done earlier are reused when their settings "
                     f"match (refused when not: --fresh starts over), {states.count('partial')} resume(s) from its "
                     f"checkpoint, {states.count('new')} start fresh; a killed evaluation resumes at the run it was in")
    lines.append(f"  each fraction's subset{f' (draw {settings.subset_draw})' if settings.subset_draw else ''}: "
                 f"{settings.out}/subsets/<fraction>/split.tsv (its training frames 'train'; "
                 "what the arms' batch jobs read, and what a --synthetic folder is to be made from)")
    return lines


# ------------------------------------------------------------------------------------------------ progress
