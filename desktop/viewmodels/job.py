"""One job at a time: start it on a JobWorker thread, follow its events (progress, current frame and step,
ETA, failures and skips as they happen, a preview of the latest result), cancel it, keep its summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from desktop.workers.job_worker import JobWorker
from engine.dataset.manifest import MANIFEST_NAME
from engine.jobs import JobEvent, JobSpec, JobSummary, build_spec
from engine.jobs.output_lock import lock_problem

RUNNING_STATES = ("starting", "running", "cancelling")  # a job is under way: no second one, settings fixed


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    frame: str = ""
    variant: int = -1
    step: int = 0
    steps: int = 0
    message: str = ""
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    eta_seconds: float | None = None
    elapsed: float = 0.0
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, frame, reason)

    @property
    def fraction(self) -> float:
        if not self.total:
            return 0.0
        inside = self.step / self.steps if self.steps and self.done < self.total else 0.0
        return min(1.0, (self.done + inside) / self.total)


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class JobController(QObject):
    stateChanged = Signal(str)  # idle | starting | running | cancelling | done
    progressChanged = Signal()
    previewChanged = Signal(str, QImage)
    problemAdded = Signal(str, str, str)  # kind (failed | skipped), frame, reason
    jobDone = Signal(object)  # JobSummary (status ok | failures | cancelled)
    cannotStart = Signal(str)
    crashed = Signal(object, str)  # exception, traceback ("" for the engine's own errors)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.state = "idle"
        self.progress = Progress()
        self.summary: JobSummary | None = None
        self.spec = None
        self.worker: JobWorker | None = None
        self.latest_preview: tuple[str, QImage] | None = None
        self._t0 = 0.0
        self._f0: float | None = None
        self._variants_this_run = 0

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @staticmethod
    def spec_from(values: dict) -> JobSpec:
        """The job the settings describe (engine.jobs.build_spec); InputError says what is wrong with them."""
        return build_spec(values, source="job settings")

    @staticmethod
    def output_problem(output: Path) -> str | None:
        """Why the job cannot write to ``output`` now (another job, the app's or a terminal's, or a review is
        writing there), or None."""
        return lock_problem(output)

    @staticmethod
    def holds_earlier_job(output: Path) -> bool:
        """Whether ``output`` holds what an earlier job wrote (starting over there deletes it)."""
        return (output / MANIFEST_NAME).exists()

    def start(self, spec) -> None:
        if self.running:
            raise RuntimeError("a job is already running")
        self.spec, self.summary, self.latest_preview = spec, None, None
        self.progress = Progress(message="loading the model bundle…")
        self._t0, self._f0, self._variants_this_run = time.monotonic(), None, 0
        worker = JobWorker(spec, self)
        worker.event.connect(self._on_event)
        worker.preview.connect(self._on_preview)
        worker.jobDone.connect(self._on_done)
        worker.cannotStart.connect(self._on_cannot_start)
        worker.crashed.connect(self._on_crashed)
        worker.finished.connect(self._worker_finished)
        self.worker = worker
        self._set_state("starting")
        self.progressChanged.emit()
        worker.start()

    def cancel(self) -> None:
        if self.worker is not None and self.running:
            self.worker.cancel()
            self.progress.message = "cancelling: stops within a denoising step…"
            self._set_state("cancelling")
            self.progressChanged.emit()

    def wait(self, msecs: int = 60_000) -> bool:
        """Block until the worker thread ended (closing the window, tests)."""
        return self.worker.wait(msecs) if self.worker is not None else True

    def _worker_finished(self) -> None:
        worker = self.sender()
        if worker is self.worker:
            self.worker = None
        if worker is not None:
            worker.deleteLater()

    # ------------------------------------------------------------------ worker signals
    def _on_event(self, event: JobEvent) -> None:
        p = self.progress
        p.total, p.done = event.total or p.total, event.done
        if event.kind == "started":
            p.message = event.message
            self._t0 = time.monotonic()
            if self.state == "starting":
                self._set_state("running")
        elif event.kind == "frame":
            p.frame, p.step, p.steps, p.variant = event.frame, 0, 0, -1
            if self._f0 is None:
                self._f0 = p.fraction
        elif event.kind == "step":
            p.frame, p.variant, p.step, p.steps = event.frame, event.variant, event.step, event.steps
        elif event.kind == "variant":
            p.ok += 1
            p.step = 0
            self._variants_this_run += 1
        elif event.kind in ("failed", "skipped"):
            if event.kind == "failed":
                p.failed += 1
            else:
                p.skipped += 1
            p.problems.append((event.kind, event.frame, event.message))
            self.problemAdded.emit(event.kind, event.frame, event.message)
        elif event.kind == "finished":
            p.step = 0
        p.elapsed = time.monotonic() - self._t0
        p.eta_seconds = self._eta()
        self.progressChanged.emit()

    def _eta(self) -> float | None:
        p = self.progress
        if self._f0 is None or self._variants_this_run < 1:
            return None
        gained = p.fraction - self._f0
        if gained <= 0:
            return None
        return p.elapsed / gained * (1.0 - p.fraction)

    def _on_preview(self, path: str, image: QImage) -> None:
        self.latest_preview = (path, image)
        self.previewChanged.emit(path, image)

    def _on_done(self, summary: JobSummary) -> None:
        self.summary = summary
        p = self.progress
        p.ok, p.failed, p.skipped, p.eta_seconds = summary.ok, summary.failed, summary.skipped, None
        p.message = {"ok": "finished", "failures": "finished with failures", "cancelled": "cancelled"}[summary.status]
        self._set_state("done")
        self.progressChanged.emit()
        self.jobDone.emit(summary)

    def _on_cannot_start(self, message: str) -> None:
        self.progress.message = "could not start"
        self._set_state("idle")
        self.progressChanged.emit()
        self.cannotStart.emit(message)

    def _on_crashed(self, exc: BaseException, details: str) -> None:
        self.progress.message = "stopped by an error"
        self._set_state("idle")
        self.progressChanged.emit()
        self.crashed.emit(exc, details)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.stateChanged.emit(state)
