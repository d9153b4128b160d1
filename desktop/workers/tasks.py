"""Short background calls (discover a folder, verify a bundle, apply a review, propose masks): run a
function on a thread pool, get its result or its exception back on the GUI thread as a signal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


class _Relay(QObject):
    done = Signal(object)
    failed = Signal(object)


class _Task(QRunnable):
    def __init__(self, function: Callable[[], Any], relay: _Relay):
        super().__init__()
        self.setAutoDelete(True)
        self._function = function
        self._relay = relay

    def run(self) -> None:
        try:
            result = self._function()
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the GUI thread to be shown
            self._relay.failed.emit(exc)
        else:
            self._relay.done.emit(result)


class TaskRunner(QObject):
    """Runs functions off the GUI thread; ``serial=True`` runs them one at a time, in order."""

    def __init__(self, parent: QObject | None = None, serial: bool = False, threads: int = 2):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1 if serial else threads)
        self._relays: set[_Relay] = set()

    def submit(self, function: Callable[[], Any], on_done: Callable[[Any], None],
               on_error: Callable[[BaseException], None]) -> None:
        relay = _Relay(self)  # lives in the GUI thread: emitting from the pool queues the call here
        self._relays.add(relay)

        def finish(callback, value):
            self._relays.discard(relay)
            relay.deleteLater()
            callback(value)

        relay.done.connect(lambda value: finish(on_done, value))
        relay.failed.connect(lambda exc: finish(on_error, exc))
        self.pool.start(_Task(function, relay))

    def busy(self) -> bool:
        return bool(self._relays)

    def wait(self, msecs: int = -1) -> bool:
        return self.pool.waitForDone(msecs)
