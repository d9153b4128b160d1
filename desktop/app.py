"""The desktop app's entry: ``run_app(argv)`` creates the QApplication and the main window and runs it.
``python main.py`` with no arguments calls it."""

from __future__ import annotations

import os
import sys

from PySide6.QtWidgets import QApplication

from desktop.errors import install_excepthook
from desktop.settings import APPLICATION, ORGANISATION

EXIT_NO_DISPLAY = 2


def create_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "polypforge", *(argv or [])])
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("PolypForge")
    return app


def no_display() -> bool:
    """On Linux without X or Wayland (a server, ssh) Qt would abort; say so instead."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_app(argv: list[str] | None = None) -> int:
    """Open the app window; returns the exit code when it is closed.

    argv: extra Qt arguments, without the program name (None: sys.argv[1:])."""
    if QApplication.instance() is None and no_display():
        print("PolypForge: no display to open the window on (DISPLAY / WAYLAND_DISPLAY unset). Headless: "
              "`main.py --batch …`; pictures of the app: `python -m desktop.screenshots OUTDIR`.", file=sys.stderr)
        return EXIT_NO_DISPLAY
    app = create_app(sys.argv[1:] if argv is None else argv)
    install_excepthook()
    from desktop.views.main_window import MainWindow

    window = MainWindow()
    window.show()
    _quit_after_env(app, window)
    return app.exec()


def _quit_after_env(app: QApplication, window) -> None:
    """Test hook (installer smoke test): $POLYPFORGE_QUIT_AFTER_MS closes the window after that many ms."""
    text = os.environ.get("POLYPFORGE_QUIT_AFTER_MS", "").strip()
    if not text.isdigit():
        return
    from PySide6.QtCore import QTimer

    def close() -> None:
        window.close()
        app.quit()

    QTimer.singleShot(int(text), close)


if __name__ == "__main__":
    sys.exit(run_app())
