"""The running job: progress bar with the current frame and step, ETA, a live preview of the latest
result, the failures (and skips) with their reasons as they happen, Cancel; then the summary, and the
"Quality report" button (engine.metrics: FD/KID/t-SNE/memorisation of the output against the job's input
frames, made on a worker thread, then opened in the browser)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QImage, QPixmap
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from desktop.viewmodels.job import JobController, format_seconds
from desktop.views.widgets import ElidedLabel, add_progress_rows
from desktop.workers.tasks import TaskRunner

REPORT_FOLDER = "quality_report"


class PreviewLabel(QLabel):
    """Shows an image scaled to fit, keeping its aspect, re-scaled when resized."""

    def __init__(self, placeholder: str):
        super().__init__(placeholder)
        self._image: QImage | None = None
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumSize(240, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background: #1e1e1e; color: #9e9e9e;")

    def set_image(self, image: QImage | None) -> None:
        self._image = image
        self._rescale()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._rescale()

    def _rescale(self) -> None:
        if self._image is None or self._image.isNull():
            self.setPixmap(QPixmap())
            return
        self.setPixmap(QPixmap.fromImage(self._image).scaled(
            self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))


class RunPage(QWidget):
    cancelRequested = Signal()
    openOutputRequested = Signal()
    reviewRequested = Signal()
    reportReady = Signal(str)  # the report.html path
    reportFailed = Signal(str)

    def __init__(self, job: JobController, parent: QWidget | None = None):
        super().__init__(parent)
        self.job = job
        self.status = ElidedLabel("No job has run yet. Choose the settings on the right, then press Run.",
                                  elide=Qt.TextElideMode.ElideRight)
        font = self.status.font()
        font.setPointSizeF(font.pointSizeF() * 1.15)
        font.setBold(True)
        self.status.setFont(font)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setFormat("%p%")
        self.detail = ElidedLabel(" ", elide=Qt.TextElideMode.ElideRight)
        self.eta = QLabel(" ")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.open_button = QPushButton("Open output folder")
        self.open_button.clicked.connect(self.openOutputRequested)
        self.review_button = QPushButton("Review results →")
        self.review_button.clicked.connect(self.reviewRequested)
        self.report_button = QPushButton("Quality report")
        self.report_button.setToolTip("FD, KID, t-SNE and a memorisation check of the generated frames against "
                                      "the input frames; opens in the browser")
        self.report_button.clicked.connect(self.make_report)
        self.report_tasks = TaskRunner(self, serial=True)
        self.report_path: Path | None = None
        self.open_url = QDesktopServices.openUrl  # replaceable (tests)
        for button in (self.open_button, self.review_button, self.report_button):
            button.setEnabled(False)

        self.preview = PreviewLabel("The latest result appears here while the job runs.")
        self.preview_caption = ElidedLabel(" ")
        self.preview_caption.setStyleSheet("color: #666;")
        preview_box = QGroupBox("Latest result")
        preview_layout = QVBoxLayout(preview_box)
        preview_layout.addWidget(self.preview, 1)
        preview_layout.addWidget(self.preview_caption)

        self.problems = QListWidget()
        self.problems.setWordWrap(True)
        self.problems_box = QGroupBox("Failed and skipped frames")
        problems_layout = QVBoxLayout(self.problems_box)
        problems_layout.addWidget(self.problems)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        summary_box = QGroupBox("Summary")
        summary_layout = QVBoxLayout(summary_box)
        summary_layout.addWidget(self.summary)
        summary_layout.addStretch(1)
        side = QVBoxLayout()
        side.addWidget(self.problems_box, 1)
        side.addWidget(summary_box, 1)

        buttons = QHBoxLayout()
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.report_button)
        buttons.addWidget(self.review_button)
        body = QHBoxLayout()
        body.addWidget(preview_box, 3)
        body.addLayout(side, 2)
        layout = QVBoxLayout(self)
        add_progress_rows(layout, self.status, self.bar, self.detail, self.eta)
        layout.addLayout(buttons)
        layout.addLayout(body, 1)

        job.stateChanged.connect(self._state_changed)
        job.progressChanged.connect(self._progress)
        job.previewChanged.connect(self._preview)
        job.problemAdded.connect(self._problem)
        job.jobDone.connect(self._done)

    def _state_changed(self, state: str) -> None:
        self.cancel_button.setEnabled(state in ("starting", "running"))
        if state == "starting":
            self.problems.clear()
            self.problems_box.setTitle("Failed and skipped frames")
            self.summary.setText("")
            self.preview.set_image(None)
            self.preview.setText("The latest result appears here while the job runs.")
            self.preview_caption.setText(" ")
            self.review_button.setEnabled(False)
            self.report_button.setEnabled(False)
            self.open_button.setEnabled(True)
        if state == "cancelling":
            self.cancel_button.setText("Cancelling…")
        else:
            self.cancel_button.setText("Cancel")

    def _progress(self) -> None:
        p = self.job.progress
        state = self.job.state
        self.bar.setValue(round(p.fraction * 1000))
        if state == "starting":
            self.status.setText("Starting: loading and verifying the model bundle…")
        elif state in ("running", "cancelling"):
            self.status.setText(f"{'Cancelling' if state == 'cancelling' else 'Running'}: "
                                f"{p.done} of {p.total} variants")
        elif state == "idle":
            self.status.setText(f"The job {p.message}.")
        if p.frame:
            step = f", step {p.step} of {p.steps}" if p.steps else ""
            variant = f", variant {p.variant + 1}" if p.variant >= 0 else ""
            self.detail.setText(f"Frame {p.frame}{variant}{step}  ·  {p.ok} written, {p.failed} failed, "
                                f"{p.skipped} skipped")
        elif p.message and state != "done":
            self.detail.setText(p.message)
        eta = f"about {format_seconds(p.eta_seconds)} left" if p.eta_seconds is not None else "estimating time left…"
        self.eta.setText(f"{format_seconds(p.elapsed)} elapsed · {eta}" if state in ("running", "cancelling") else "")

    def _preview(self, path: str, image: QImage) -> None:
        self.preview.set_image(image)
        self.preview_caption.setText(path)

    def _problem(self, kind: str, frame: str, reason: str) -> None:
        last = self.problems.item(self.problems.count() - 1) if self.problems.count() else None
        if last is not None and last.data(Qt.ItemDataRole.UserRole) == (kind, frame, reason):
            count = last.data(Qt.ItemDataRole.UserRole + 1) + 1  # the frame's other variants: one line
            last.setData(Qt.ItemDataRole.UserRole + 1, count)
            last.setText(f"{kind}: {frame} ({count} variants)\n{reason}")
        else:
            item = QListWidgetItem(f"{kind}: {frame}\n{reason}")
            item.setData(Qt.ItemDataRole.UserRole, (kind, frame, reason))
            item.setData(Qt.ItemDataRole.UserRole + 1, 1)
            item.setForeground(QColor("#c62828" if kind == "failed" else "#8d6e00"))
            item.setToolTip(reason)
            self.problems.addItem(item)
        self.problems.scrollToBottom()
        p = self.job.progress
        self.problems_box.setTitle(f"Failed and skipped frames ({p.failed} failed, {p.skipped} skipped)")

    def _done(self, summary) -> None:
        title = {"ok": "Finished", "failures": "Finished with failures", "cancelled": "Cancelled"}[summary.status]
        self.status.setText(f"{title}: {summary.ok} variants written to {summary.output}")
        self.detail.setText(" ")
        self.eta.setText("")
        if summary.status != "cancelled":
            self.bar.setValue(1000)
        lines = [
            f"<b>{title}</b> in {format_seconds(summary.seconds)} on {summary.provider.upper() or '?'}",
            f"planned {summary.planned} · written {summary.ok} · failed {summary.failed} · "
            f"skipped {summary.skipped}" + (f" · kept from an earlier run {summary.reused}" if summary.reused else ""),
        ]
        if summary.status == "cancelled":
            lines.append("What was written is kept; run the job again with the same output folder to continue.")
        lines += [f"<span style='color:#666'>{note}</span>" for note in summary.notes]
        self.summary.setText("<br>".join(lines))
        self.open_button.setEnabled(True)
        self.review_button.setEnabled(summary.ok > 0 or summary.reused > 0)
        self.report_button.setEnabled((summary.ok > 0 or summary.reused > 0) and not self.report_tasks.busy())
        listed = {(frame, reason) for kind, frame, reason in self.job.progress.problems if kind == "failed"}
        for failure in summary.failures:  # failures an earlier, resumed run recorded
            if (failure["frame"], failure["reason"]) not in listed:
                listed.add((failure["frame"], failure["reason"]))
                self._problem("failed", failure["frame"], f"{failure['reason']} (earlier run)")
        if self.problems.count() == 0:
            self.problems.addItem("None.")

    # ------------------------------------------------------------------------------------------ quality report
    def make_report(self) -> bool:
        """Start the quality report of the last job (input frames vs output) on a worker thread."""
        summary, spec = self.job.summary, self.job.spec
        if summary is None or spec is None or self.report_tasks.busy():
            return False
        real, synthetic = Path(spec.input), Path(summary.output)
        out = synthetic / REPORT_FOLDER
        self.report_button.setEnabled(False)
        self.report_button.setText("Making the quality report…")

        def work():
            from engine.metrics.report import run_report

            return run_report(real, synthetic, out, provider=getattr(spec, "provider", "auto")).html

        self.report_tasks.submit(work, self._report_done, self._report_failed)
        return True

    def _report_finished(self) -> None:
        self.report_button.setText("Quality report")
        self.report_button.setEnabled(self.job.summary is not None and not self.job.running)

    def _report_done(self, html) -> None:
        self._report_finished()
        self.report_path = Path(html)
        self.detail.setText(f"Quality report: {self.report_path}")
        if not self.open_url(QUrl.fromLocalFile(str(self.report_path))):
            QMessageBox.information(self, "Quality report", f"The report is at {self.report_path} (no browser "
                                    "could be opened).")
        self.reportReady.emit(str(self.report_path))

    def _report_failed(self, exc: BaseException) -> None:
        from desktop.errors import describe_error, show_error

        self._report_finished()
        title, text, details = describe_error(exc)
        show_error(self, f"Quality report: {title.lower()}", text, details)  # unexpected ones are logged
        self.reportFailed.emit(text)
