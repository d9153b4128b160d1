"""The learning curve (or its plan) on a QThread: the engine's progress events and log lines become Qt signals,
Cancel sets a flag the engine polls at every training step. Nothing here touches a widget, and nothing here
imports the evaluation lab: the view-model hands over the function to run."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QThread, Signal

from engine.errors import PolypForgeError

# work(on_progress, cancel, log) → result
Work = Callable[[Callable[[object], None], Callable[[], bool], Callable[[str], None]], Any]


class EvaluationWorker(QThread):
    """Runs ``work`` once. Exactly one of done, failed is emitted at the end."""

    progress = Signal(object)  # engine.evaluation.curve_plan.CurveProgress
    log = Signal(str)
    done = Signal(object)  # what work returned
    failed = Signal(object, str)  # the exception, its traceback ("" for the engine's own errors)

    def __init__(self, work: Work, parent=None):
        super().__init__(parent)
        self.work = work
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> None:
        try:
            result = self.work(self.progress.emit, self._cancel.is_set, self.log.emit)
        except PolypForgeError as exc:
            self.failed.emit(exc, "")
        except BaseException as exc:  # noqa: BLE001 - shown as a message (and logged), never a silent thread death
            self.failed.emit(exc, traceback.format_exc())
        else:
            self.done.emit(result)
