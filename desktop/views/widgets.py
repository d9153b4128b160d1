"""Small widgets shared by the views."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QBoxLayout, QHBoxLayout, QLabel, QProgressBar, QSizePolicy


class ElidedLabel(QLabel):
    """One line of text (often a path) elided in the middle to the width it gets; the full text is its
    tooltip. It never forces the window wider than the screen."""

    def __init__(self, text: str = "", parent=None, elide=Qt.TextElideMode.ElideMiddle):
        super().__init__(parent)
        self._full = ""
        self._elide = elide
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:
        self._full = text or ""
        super().setText(self._full)
        self.setToolTip(self._full if len(self._full) > 40 else "")
        self.update()

    def full_text(self) -> str:
        return self._full

    def minimumSizeHint(self) -> QSize:
        return QSize(40, super().minimumSizeHint().height())

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.setFont(self.font())
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(self._full, self._elide, rect.width())
        painter.drawText(rect, int(self.alignment() | Qt.AlignmentFlag.AlignVCenter), text)


def add_progress_rows(layout: QBoxLayout, status: QLabel, bar: QProgressBar, detail: QLabel, eta: QLabel) -> None:
    """A long task's progress as the app shows it everywhere: the status line, the bar, then what it is doing now
    (stretching) beside the time left."""
    layout.addWidget(status)
    layout.addWidget(bar)
    row = QHBoxLayout()
    row.addWidget(detail, 1)
    row.addWidget(eta)
    layout.addLayout(row)
