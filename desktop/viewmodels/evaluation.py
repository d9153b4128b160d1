"""Evaluate…: does synthetic data help on the open dataset? The learning curve of ``main.py evaluate``
(engine.evaluation.subset_draws.run_curve: one curve, or the curve over subset draws) started from the app.

- ``curve_settings(form, train, job_values)``: the dialog's form as the engine's ``CurveSettings``: the training
  frames are the open dataset folder (frames + masks: the folder the batch job reads), the test folders and
  polyp-free frames as given, the output folder (default: ``<dataset>-evaluation`` beside it; ``-draws`` for the
  curve over subset draws), fractions, seeds (over draws: one a draw by default, engine.evaluation.subset_draws), the subset draws,
  step cap and threads (0 or "" = the engine's default), and the arms, each a batch-job file written atomically
  into ``<output>/jobs/`` from the engine's presets (engine.jobs.arm_presets) built on the app's current generation
  settings: ``synthetic`` ("PolypForge synthetic"), ``synthetic-judged``, and the honest baselines ``copy-paste``
  (mode transplant, harmonize none: no model) and ``transplant`` (harmonize model at strength 0.3); and the mixed
  arm ``judged-and-copy-paste`` (half copy-paste, half judge-kept synthetic; ticking it brings those two arms). The
  evaluation sets each job's input, output and split per fraction.
- ``plan(settings)`` and ``start(settings)`` run the engine on an EvaluationWorker thread (the plan reads the
  frames and times a training step: seconds); progress (``CurveProgress``), log lines, then the report's data
  or the reason it stopped come back as signals. ``cancel()`` is the engine's cancel callback: the run stops
  within a training step, and starting again into the same folder resumes it (finished runs are reused).
- The evaluation lab needs torch and pycocotools, which the installed app leaves out: ``check_lab()`` imports it
  off the GUI thread and says in one line (``DEVELOPER_INSTALL``) what to install when it cannot; the rest of
  the app does not need it. Nothing here imports engine.evaluation at module level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from desktop.settings import EvaluationForm
from desktop.workers.evaluation_worker import EvaluationWorker
from desktop.workers.tasks import TaskRunner
from engine.errors import InputError, PolypForgeError
from engine.dataset.curve_inputs import parse_fractions, parse_test_folders
from engine.jobs.arm_presets import MIX_DESCRIPTIONS, MIX_PRESETS, PRESETS, arm_job_values, write_arm_job

DEVELOPER_INSTALL = (
    "The evaluation needs the developer install: torch and pycocotools (the pyproject extra “export”), which "
    "this installation does not have — the installed app leaves them out. In a source checkout: "
    "pip install torch==2.13.0 && pip install -e '.[cpu,export,desktop]', then start the app with "
    "python main.py. Everything else in the app works without them."
)
JOBS_FOLDER = "jobs"  # in the output folder: the arms' job files
REPORT_NAME = "report.html"
DRAWS_REPORT_NAME = "draws.html"  # engine.evaluation.subset_draws.SUMMARY_NAMES
RUNNING = ("planning", "running", "cancelling")


@dataclass(frozen=True)
class Arm:
    name: str  # the arm in the report, and its job file's stem
    label: str  # the dialog's checkbox
    field: str  # the EvaluationForm flag
    description: str


ARMS = tuple(Arm(name, label, field, PRESETS[name]) for name, label, field in (
    ("synthetic", "PolypForge synthetic", "synthetic_arm"),
    ("copy-paste", "copy-paste", "copy_paste_arm"),
    ("transplant", "harmonized transplant", "transplant_arm"),
    ("synthetic-judged", "PolypForge synthetic, judge-kept", "judged_arm"),
    ("removal", "polyps removed (false positives)", "removal_arm"),
))
# Mixed arms (engine.jobs.arm_presets.MIX_PRESETS): ticking one brings the arms whose pools it draws on.
MIXES = tuple(Arm(name, label, field,
                  f"{MIX_DESCRIPTIONS[name]} (it brings the arms {' and '.join(MIX_PRESETS[name])})")
              for name, label, field in (("judged-and-copy-paste", "copy-paste + judge-kept synthetic, half each",
                                          "mixed_arm"),))


class EvaluationUnavailable(PolypForgeError):
    """This installation cannot run the evaluation lab (torch or pycocotools missing)."""


def import_torch_stack() -> None:
    """Import what the evaluation lab needs beyond the app (the tests replace this to simulate its absence)."""
    import pycocotools  # noqa: F401
    import torch  # noqa: F401


def load_lab():
    """engine.evaluation.subset_draws (``run_curve``: one curve or the curve over subset draws; ``CurveSettings``),
    or EvaluationUnavailable (DEVELOPER_INSTALL and what is missing)."""
    try:
        import_torch_stack()
        from engine.evaluation import subset_draws
    except ImportError as exc:
        missing = exc.name or str(exc)
        raise EvaluationUnavailable(f"{DEVELOPER_INSTALL}\n(missing: {missing})") from None
    return subset_draws


# ------------------------------------------------------------------------------------------------ the form
def default_output(train: Path, subset_draws: int = 0) -> Path:
    """The evaluation folder beside the dataset: <dataset>-evaluation, or <dataset>-evaluation-draws for the curve
    over subset draws (its draws in draw-K/ inside; more draws later go into the same folder)."""
    train = Path(train)
    return train.parent / (f"{train.name}-evaluation" + ("-draws" if subset_draws else ""))


def output_folder(form: EvaluationForm, train: Path | None) -> Path | None:
    if form.output.strip():
        return Path(form.output.strip()).expanduser()
    return default_output(train, form.subset_draws) if train is not None else None


def report_name(subset_draws: int) -> str:
    """The page an evaluation opens: report.html, or draws.html over subset draws."""
    return DRAWS_REPORT_NAME if subset_draws else REPORT_NAME


def report_path(form: EvaluationForm, train: Path | None) -> Path | None:
    out = output_folder(form, train)
    return out / report_name(form.subset_draws) if out is not None else None


# ------------------------------------------------------------------------------------------------ the arms
def write_arm_jobs(form: EvaluationForm, out: Path, train: Path, job_values: dict) -> dict[str, Path]:
    """The ticked arms' job files in <out>/jobs/: {arm name: job file}."""
    comment = ("The arm {name!r} of the app's evaluation ({label}): {description}.\nWritten by PolypForge's "
               "Evaluate… dialog; input, output and the split are set by the evaluation for each fraction.")
    brought = {part for parts in ticked_mixes(form).values() for part in parts}  # the ticked mixes draw on them
    return {arm.name: write_arm_job(arm.name, arm_job_values(arm.name, job_values), Path(out) / JOBS_FOLDER, train,
                                    comment.format(name=arm.name, label=arm.label, description=arm.description))
            for arm in ARMS if getattr(form, arm.field) or arm.name in brought}


def ticked_mixes(form: EvaluationForm) -> dict[str, tuple[str, ...]]:
    """The ticked mixed arms: {name: the arms whose pools it draws on}."""
    return {mix.name: MIX_PRESETS[mix.name] for mix in MIXES if getattr(form, mix.field)}


def curve_settings(form: EvaluationForm, train: Path, job_values: dict, lab=None, tuning: dict | None = None):
    """The engine's CurveSettings for the form (and the arms' job files, written); InputError says what is wrong.
    ``tuning``: further CurveSettings fields (size, widths, validate_every, patience, …) the form does not show."""
    lab = lab or load_lab()
    if train is None:
        raise InputError("no dataset is open: open a folder of frames + masks first (File ▸ Open frames folder…)")
    train = Path(train)
    tests = parse_test_folders(form.tests)
    normals = Path(form.normals.strip()).expanduser() if form.normals.strip() else None
    if normals is not None and not normals.is_dir():
        raise InputError(f"{normals}: polyp-free frames folder not found")
    out = output_folder(form, train)
    if out.resolve() == train.resolve() or out.resolve().is_relative_to(train.resolve()):
        raise InputError(f"{out}: the output folder must not be the dataset folder or inside it ({train})")
    optional = {"fractions": parse_fractions(form.fractions) or None,
                "subset_draws": form.subset_draws or None, "seeds": form.seeds or None,
                "max_steps": form.max_steps or None, "threads": form.threads or None}
    arms = write_arm_jobs(form, out, train, job_values)
    return lab.CurveSettings(train=train, tests=tests, out=out, arms=arms, mixes=ticked_mixes(form), normals=normals,
                             fresh=form.fresh,
                             **{k: v for k, v in optional.items() if v is not None}, **(tuning or {}))


# ------------------------------------------------------------------------------------------------ running
@dataclass
class Outcome:
    status: str  # "done" | "cancelled" | "planned"
    data: dict
    message: str = ""


class EvaluationController(QObject):
    """One evaluation (or plan) at a time, on an EvaluationWorker thread."""

    labChecked = Signal(str)  # "" when the lab can run, else why not (DEVELOPER_INSTALL …)
    stateChanged = Signal(str)  # idle | planning | running | cancelling
    progressChanged = Signal(object)  # CurveProgress
    logLine = Signal(str)
    planReady = Signal(list)  # the plan's lines
    finished = Signal(object)  # the report's data ("html": report.html)
    cancelled = Signal(str)
    failed = Signal(object, str)  # the exception, its traceback ("" for the engine's own errors)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.lab = None
        self.problem: str | None = None  # None: not checked yet
        self.state = "idle"
        self.progress = None  # the latest CurveProgress
        self.settings = None  # the CurveSettings of the latest plan or run
        self.worker: EvaluationWorker | None = None
        self.tuning: dict = {}  # further CurveSettings fields the dialog does not show (tests, scripts)
        self._tasks = TaskRunner(self, serial=True)

    @property
    def busy(self) -> bool:
        return self.state in RUNNING

    @property
    def checking(self) -> bool:
        return self._tasks.busy()

    def check_lab(self) -> None:
        """Import the lab off the GUI thread (torch takes seconds); labChecked says whether it can run."""
        if self.problem is not None:
            self.labChecked.emit(self.problem)
            return
        if not self._tasks.busy():
            self._tasks.submit(load_lab, self._lab_loaded, self._lab_failed)

    def _lab_loaded(self, lab) -> None:
        self.lab, self.problem = lab, ""
        self.labChecked.emit("")

    def _lab_failed(self, exc: BaseException) -> None:
        self.lab = None
        self.problem = str(exc) if isinstance(exc, EvaluationUnavailable) else f"{DEVELOPER_INSTALL}\n({exc})"
        self.labChecked.emit(self.problem)

    def defaults(self) -> dict:
        """The engine's defaults the form shows for its empty fields (after the lab loaded)."""
        if self.lab is None:
            return {}
        from engine.evaluation import curve_plan

        return {"fractions": curve_plan.DEFAULT_FRACTIONS, "max_steps": curve_plan.MAX_STEPS,
                "seeds_small": curve_plan.SEEDS_SMALL, "seeds_large": curve_plan.SEEDS_LARGE,
                "small_fraction": curve_plan.SMALL_FRACTION}

    def curve_settings(self, form: EvaluationForm, train: Path | None, job_values: dict):
        if self.lab is None:
            raise EvaluationUnavailable(self.problem or DEVELOPER_INSTALL)
        return curve_settings(form, train, job_values, self.lab, self.tuning)

    def plan(self, settings) -> None:
        """The engine's plan (runs, budget, estimated time, what the folder holds) on the worker thread."""
        lab = self.lab

        def work(on_progress, cancel, log):
            return Outcome("planned", lab.run_curve(settings, log=log, plan_only=True))

        self._run(settings, work, "planning")

    def start(self, settings) -> None:
        """Run (or resume) the evaluation on the worker thread."""
        lab = self.lab

        def work(on_progress, cancel, log):
            from engine.training.task import TrainingInterrupted

            try:
                return Outcome("done", lab.run_curve(settings, on_progress=on_progress, cancel=cancel, log=log))
            except TrainingInterrupted as exc:
                if not cancel():
                    raise
                return Outcome("cancelled", {}, str(exc))

        self._run(settings, work, "running")

    def _run(self, settings, work, state: str) -> None:
        if self.busy:
            raise RuntimeError("an evaluation is already running")
        if self.lab is None:
            raise EvaluationUnavailable(self.problem or DEVELOPER_INSTALL)
        self.settings, self.progress = settings, None
        worker = EvaluationWorker(work, self)
        worker.progress.connect(self._on_progress)
        worker.log.connect(self.logLine)
        worker.done.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        worker.finished.connect(self._worker_finished)
        self.worker = worker
        self._set_state(state)
        worker.start()

    def cancel(self) -> None:
        if self.worker is not None and self.state == "running":
            self.worker.cancel()
            self._set_state("cancelling")

    def wait(self, msecs: int = 60_000) -> bool:
        """Block until the worker thread and the lab check ended (closing the window, tests)."""
        done = self.worker.wait(msecs) if self.worker is not None else True
        return self._tasks.wait(msecs) and done

    def _worker_finished(self) -> None:
        worker = self.sender()
        if worker is self.worker:
            self.worker = None
        if worker is not None:
            worker.deleteLater()

    def _on_progress(self, event) -> None:
        self.progress = event
        self.progressChanged.emit(event)

    def _on_done(self, outcome: Outcome) -> None:
        self._set_state("idle")
        if outcome.status == "planned":
            self.planReady.emit(list(outcome.data.get("plan", [])))
        elif outcome.status == "cancelled":
            self.cancelled.emit(outcome.message)
        else:
            self.finished.emit(outcome.data)

    def _on_failed(self, exc: BaseException, details: str) -> None:
        self._set_state("idle")
        self.failed.emit(exc, details)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.stateChanged.emit(state)
