"""Helpers for the desktop tests and the screenshot script: a window on a temporary settings file (never
the curator's), message boxes captured instead of shown, waiting on the event loop."""

from __future__ import annotations

import os
import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QEventLoop, QSettings
from PySide6.QtWidgets import QMessageBox


class MessageLog:
    """Replaces QMessageBox.critical/warning/information/question; records (kind, title, text)."""

    def __init__(self, answer=QMessageBox.StandardButton.Yes):
        self.messages: list[tuple[str, str, str]] = []
        self.answer = answer

    def install(self, monkeypatch) -> MessageLog:
        for kind in ("critical", "warning", "information"):
            monkeypatch.setattr(QMessageBox, kind, staticmethod(self._recorder(kind)))
        monkeypatch.setattr(QMessageBox, "question", staticmethod(self._recorder("question", self.answer)))
        return self

    def _recorder(self, kind, answer=QMessageBox.StandardButton.Ok):
        def record(parent, title, text, *args, **kwargs):
            self.messages.append((kind, str(title), str(text)))
            return answer

        return record

    def texts(self, kind: str = "critical") -> list[str]:
        return [f"{title}: {text}" for k, title, text in self.messages if k == kind]


def temporary_settings(folder: Path) -> QSettings:
    """An INI file under folder; also set as $POLYPFORGE_SETTINGS so nothing reaches the real settings."""
    path = Path(folder) / "polypforge-settings.ini"
    os.environ["POLYPFORGE_SETTINGS"] = str(path)
    return QSettings(str(path), QSettings.Format.IniFormat)


def wait_until(predicate, timeout: float = 30.0, step_ms: int = 20) -> bool:
    """Process events until predicate() is true or timeout seconds passed."""
    end = time.monotonic() + timeout
    app = QCoreApplication.instance()
    while not predicate():
        if time.monotonic() > end:
            return False
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, step_ms)
        time.sleep(step_ms / 4000)
    return True


def settle(seconds: float) -> None:
    wait_until(lambda: False, seconds)
