"""Errors as the curator sees them: one clear message naming the file, never a console-only traceback.

``describe_error`` turns an exception into (title, text, details); ``show_error`` puts it in a message box
(``QMessageBox.critical``: tests replace it to capture the message instead of blocking);
``install_excepthook`` makes any exception that escapes a slot or a thread end the same way.
"""

from __future__ import annotations

import errno
import sys
import threading
import traceback
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from engine.errors import BundleError, Cancelled, InputError, OutputLocked, PolypForgeError

RESUME_HINT = (
    "\n\nIn the app: untick “Continue the job in the output folder” to start over there, "
    "or choose another output folder."
)


def describe_error(exc: BaseException) -> tuple[str, str, str | None]:
    """(title, text for the curator, technical details or None)."""
    if isinstance(exc, BundleError):
        return "Model bundle cannot be used", str(exc), None
    if isinstance(exc, InputError):
        return "Cannot use this input", str(exc), None
    if isinstance(exc, Cancelled):
        return "Cancelled", str(exc), None
    if isinstance(exc, OutputLocked):
        return "The output folder is in use", str(exc), None
    if isinstance(exc, PolypForgeError):
        text = str(exc)
        if "--fresh" in text:
            text += RESUME_HINT
        return "Cannot do that", text, None
    if isinstance(exc, OSError):
        where = exc.filename or "a file"
        if exc.errno == errno.ENOSPC:
            text = (f"{where}: no space left on the device. Free some space, then run the job again with the "
                    "same output folder: it continues where it stopped.")
            return "No space left on the disk", text, None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "Not allowed to write", f"{where}: {exc.strerror or 'permission denied'}", None
        return "File error", f"{where}: {exc.strerror or exc}", None
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return "Unexpected error", f"{type(exc).__name__}: {exc}\n\nThis is a bug in PolypForge.", details


def error_log_path() -> Path:
    from engine.bundle.hashing import cache_dir

    return Path(cache_dir()) / "desktop-errors.log"


def _log_details(details: str) -> Path | None:
    """Append a traceback to the error log (the app may have no console); its path, or None."""
    try:
        path = error_log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"--- {datetime.now().isoformat(timespec='seconds')}\n{details}\n")
        return path
    except Exception:  # noqa: BLE001 - logging must never raise from the error path
        return None


def show_error(parent: QWidget | None, title: str, text: str, details: str | None = None) -> None:
    """A modal error box (QMessageBox.critical, so tests can capture it). Technical details (a traceback)
    go to stderr and to the error log, whose path the message names."""
    if details:
        print(details, file=sys.stderr)
        log = _log_details(details)
        if log is not None:
            text = f"{text}\nThe details were written to {log}: please send that file with your report."
    QMessageBox.critical(parent, title, text)


def show_exception(parent: QWidget | None, exc: BaseException) -> None:
    show_error(parent, *describe_error(exc))


class _MainThreadRelay(QObject):
    """Carries exceptions from other threads to the GUI thread, where message boxes may be shown."""

    raised = Signal(object)


_relay: _MainThreadRelay | None = None
_showing = False


def _report(exc: BaseException) -> None:
    global _showing
    if _showing:  # an error inside the error box: do not stack boxes
        traceback.print_exception(type(exc), exc, exc.__traceback__)
        return
    _showing = True
    try:
        parent = QApplication.activeWindow()
        show_exception(parent, exc)
    finally:
        _showing = False


def install_excepthook() -> None:
    """sys.excepthook and threading.excepthook: print the traceback and show a message box."""
    global _relay
    _relay = _MainThreadRelay()
    _relay.raised.connect(_report, Qt.ConnectionType.QueuedConnection)

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            QApplication.quit()
            return
        traceback.print_exception(exc_type, exc, tb)
        if exc is None:
            exc = exc_type()
        if exc.__traceback__ is None:
            exc = exc.with_traceback(tb)
        _relay.raised.emit(exc)

    def thread_hook(args):
        hook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook
