"""The main window's actions: the File and Job menus and the toolbar, and which actions a job's state allows
(Evaluate… needs an open dataset: the window enables it once one is open).

The window connects each action to its slot; this module only builds them and places them."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow

from desktop.viewmodels.job import RUNNING_STATES


class MainActions:
    """Open, review, add bundle, run, cancel, open output, evaluate and quit, in the menus and the toolbar of
    ``window``."""

    def __init__(self, window: QMainWindow):
        def action(text: str, shortcut=None, tip: str = "") -> QAction:
            created = QAction(text, window)
            if shortcut is not None:
                created.setShortcut(shortcut)
            created.setToolTip(tip or text)
            return created

        self.open_action = action("Open frames folder…", QKeySequence.StandardKey.Open)
        self.review_open_action = action("Review a job's output…")
        self.add_bundle_action = action("Add model bundle folder…")
        self.run_action = action("Run", QKeySequence("Ctrl+R"), "Run the job on the opened folder")
        self.cancel_action = action("Cancel", QKeySequence("Ctrl+."), "Stop within a denoising step")
        self.cancel_action.setEnabled(False)
        self.output_action = action("Open output folder")
        self.evaluate_action = action("Evaluate…", tip="Does synthetic data help? A learning curve on the open "
                                      "dataset: real vs real + synthetic at fractions of its frames; opens its report")
        self.evaluate_action.setEnabled(False)
        self.quit_action = action("Quit", QKeySequence.StandardKey.Quit)
        menu = window.menuBar().addMenu("&File")
        for a in (self.open_action, self.review_open_action, self.add_bundle_action, self.output_action):
            menu.addAction(a)
        menu.addSeparator()
        menu.addAction(self.quit_action)
        job_menu = window.menuBar().addMenu("&Job")
        job_menu.addAction(self.run_action)
        job_menu.addAction(self.cancel_action)
        job_menu.addSeparator()
        job_menu.addAction(self.evaluate_action)
        toolbar = window.addToolBar("Main")
        toolbar.setObjectName("main-toolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for a in (self.open_action, self.run_action, self.cancel_action, self.review_open_action, self.output_action,
                  self.evaluate_action):
            toolbar.addAction(a)

    @staticmethod
    def connect(action: QAction, slot) -> None:
        """Call ``slot()`` (no arguments) when the action triggers."""
        action.triggered.connect(lambda checked=False: slot())

    def show_job_state(self, state: str) -> None:
        """While a job starts, runs or cancels: no second run, no other folder; cancel while it can."""
        running = state in RUNNING_STATES
        self.run_action.setEnabled(not running)
        self.open_action.setEnabled(not running)
        self.cancel_action.setEnabled(state in ("starting", "running"))
