"""The main window's right-hand column: the job settings (scrolling) above the Run button."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton, QScrollArea, QVBoxLayout, QWidget

from desktop.viewmodels.bundles import BundleListModel
from desktop.viewmodels.job import RUNNING_STATES
from desktop.views.settings_panel import SettingsPanel

RUN_TEXTS = {"starting": "Starting…", "running": "Running…", "cancelling": "Cancelling…"}


class JobColumn(QWidget):
    def __init__(self, bundles: BundleListModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.panel = SettingsPanel(bundles)
        self.run_button = QPushButton("Run job")
        self.run_button.setDefault(True)
        self.run_button.setMinimumHeight(34)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.panel)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.run_button)
        self.setMinimumWidth(420)
        self.setMaximumWidth(520)

    def show_job_state(self, state: str) -> None:
        """The settings are fixed and the button says what the job does while it starts, runs or cancels."""
        running = state in RUNNING_STATES
        self.run_button.setEnabled(not running)
        self.run_button.setText(RUN_TEXTS.get(state, "Run job"))
        self.panel.setEnabled(not running)
