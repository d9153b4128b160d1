"""The engine's job on a QThread: run_job's events become Qt signals, Cancel sets a flag run_job polls
every denoising step and between variants. Nothing here touches a widget."""

from __future__ import annotations

import threading
import traceback

from PySide6.QtCore import QSize, Qt, QThread, Signal
from PySide6.QtGui import QImage, QImageReader

from engine.errors import PolypForgeError
from engine.jobs import JobCannotStart, JobEvent, run_job

PREVIEW_SIZE = QSize(640, 512)


def load_preview(path: str, size: QSize = PREVIEW_SIZE) -> QImage:
    """The written variant, scaled to fit size (read on the worker thread, not the GUI's)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    original = reader.size()
    if original.isValid() and (original.width() > size.width() or original.height() > size.height()):
        reader.setScaledSize(original.scaled(size, Qt.AspectRatioMode.KeepAspectRatio))
    return reader.read()


class JobWorker(QThread):
    """Runs one job. Exactly one of jobDone, cannotStart, crashed is emitted at the end."""

    event = Signal(object)  # engine.jobs.JobEvent
    preview = Signal(str, QImage)  # path of the latest written variant, its picture
    jobDone = Signal(object)  # engine.jobs.JobSummary
    cannotStart = Signal(str)  # one line: why the job could not start
    crashed = Signal(object, str)  # the exception, its traceback

    def __init__(self, spec, parent=None):
        super().__init__(parent)
        self.spec = spec
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def _on_event(self, event: JobEvent) -> None:
        self.event.emit(event)
        if event.kind == "variant" and event.path:
            image = load_preview(event.path)
            if not image.isNull():
                self.preview.emit(event.path, image)

    def run(self) -> None:
        try:
            summary = run_job(self.spec, self._on_event, self._cancel.is_set)
        except JobCannotStart as exc:
            self.cannotStart.emit(str(exc))
        except PolypForgeError as exc:
            self.crashed.emit(exc, "")
        except BaseException as exc:  # noqa: BLE001 - e.g. a full disk: shown in a message box, not lost
            self.crashed.emit(exc, traceback.format_exc())
        else:
            self.jobDone.emit(summary)
