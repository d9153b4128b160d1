"""Evaluate…: the learning curve on the open dataset (desktop.viewmodels.evaluation).

The form (test folders, polyp-free frames, output folder, fractions, seeds, subset draws, step cap, threads, arms),
Plan (the engine's plan: runs, budget, estimated time, what the folder holds), Start (one progress bar over the training
steps left with the run and an ETA, Cancel, the log), and on finish report.html opened in the browser; "Open
report" opens an existing one. A cancelled evaluation resumes when started again into the same folder. The
dialog is modeless: closing it leaves a running evaluation running (the window's Evaluate… shows it again)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.errors import describe_error, show_error
from desktop.settings import EvaluationForm
from desktop.viewmodels.evaluation import (
    ARMS,
    MIXES,
    EvaluationController,
    default_output,
    report_name,
    report_path,
)
from desktop.viewmodels.job import format_seconds
from desktop.views.widgets import ElidedLabel, add_progress_rows
from engine.errors import PolypForgeError

RESUME_NOTE = ("A cancelled or interrupted evaluation resumes when started again into the same output folder: "
               "finished runs are reused, the run it was in continues from its last checkpoint.")
FRESH_HINT = ("\n\nIn the dialog: tick “Start over” to discard what the output folder holds, or choose another "
              "output folder.")
BAR_STEPS = 1000


class EvaluationDialog(QDialog):
    def __init__(self, controller: EvaluationController, settings: QSettings,
                 dataset_dir: Callable[[], Path | None], job_values: Callable[[], dict],
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Evaluate: does synthetic data help?")
        self.controller = controller
        self.settings = settings
        self.dataset_dir = dataset_dir
        self.job_values = job_values
        self.last_report: Path | None = None

        self.train_label = ElidedLabel("")
        self.tests = QPlainTextEdit()
        self.tests.setPlaceholderText("one a line: NAME=DIR or DIR — real frames + masks never trained on")
        self.tests.setFixedHeight(64)
        add_test = QPushButton("Add…")
        add_test.clicked.connect(self._add_test)
        self.normals = QLineEdit()
        self.normals.setPlaceholderText("optional: polyp-free frames (the false-positive rate)")
        self.output = QLineEdit()
        self.fractions = QLineEdit()
        self.seeds = QSpinBox()
        self.seeds.setRange(0, 50)
        self.seeds.setSpecialValueText("default")
        self.subset_draws = QSpinBox()
        self.subset_draws.setRange(0, 100)
        self.subset_draws.setSpecialValueText("none: one subset")
        self.subset_draws.setToolTip("Every seed trains on the same subset of your frames at a fraction, so its "
                                     "p-values speak of those frames. N draws run the curve on N other subsets of "
                                     "the same size (one seed each unless Seeds is set) and compare the arms over "
                                     "them: does a gain hold for other frames, not only other seeds? (draws.html)")
        self.subset_draws.valueChanged.connect(lambda _value: self.refresh_dataset())
        self.max_steps = QSpinBox()
        self.max_steps.setRange(0, 1_000_000)
        self.max_steps.setSingleStep(100)
        self.max_steps.setSpecialValueText("default")
        self.max_steps.setToolTip("Training steps per run at most; a run stops earlier when validation Dice stops "
                                  "improving")
        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("all cores")
        self.threads.setToolTip("torch threads; on a machine busy with other work 1 is often faster")
        self.arm_boxes = {}
        arms_row = QVBoxLayout()
        for arm in (*ARMS, *MIXES):
            box = QCheckBox(arm.label)
            box.setToolTip(f"arm “{arm.name}”: {arm.description}")
            self.arm_boxes[arm.field] = box
            arms_row.addWidget(box)
        self.fresh = QCheckBox("Start over: discard the runs, results and report the output folder holds")

        form = QFormLayout()
        form.addRow("Training frames:", self.train_label)
        tests_row = QHBoxLayout()
        tests_row.addWidget(self.tests, 1)
        tests_row.addWidget(add_test, 0, Qt.AlignmentFlag.AlignTop)
        form.addRow("Test folders:", tests_row)
        form.addRow("Polyp-free frames:", self._with_chooser(self.normals, "Folder of polyp-free frames"))
        form.addRow("Output folder:", self._with_chooser(self.output, "Folder for the runs and the report"))
        form.addRow("Fractions:", self.fractions)
        form.addRow("Seeds:", self.seeds)
        form.addRow("Subset draws:", self.subset_draws)
        form.addRow("Step cap per run:", self.max_steps)
        form.addRow("Threads:", self.threads)
        form.addRow("Arms (beside real):", arms_row)
        form.addRow("", self.fresh)
        self.form_box = QGroupBox("What to evaluate")
        self.form_box.setLayout(form)

        self.lab_note = QLabel("")
        self.lab_note.setWordWrap(True)
        self.lab_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.lab_note.setStyleSheet("color: #c62828;")
        self.lab_note.hide()

        self.plan_button = QPushButton("Plan")
        self.plan_button.setToolTip("Read the frames, time a training step and show the runs and the time they take")
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.report_button = QPushButton("Open report")
        close_button = QPushButton("Close")
        self.plan_button.clicked.connect(lambda checked=False: self.plan())
        self.start_button.clicked.connect(lambda checked=False: self.start())
        self.cancel_button.clicked.connect(lambda checked=False: self.controller.cancel())
        self.report_button.clicked.connect(lambda checked=False: self.open_report())
        close_button.clicked.connect(lambda checked=False: self.close())
        buttons = QHBoxLayout()
        for button in (self.plan_button, self.start_button, self.cancel_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.report_button)
        buttons.addWidget(close_button)
        resume = QLabel(RESUME_NOTE)
        resume.setWordWrap(True)
        resume.setStyleSheet("color: #666;")

        self.status = ElidedLabel("Plan shows what the evaluation will run and how long it may take.",
                                  elide=Qt.TextElideMode.ElideRight)
        self.bar = QProgressBar()
        self.bar.setRange(0, BAR_STEPS)
        self.bar.setValue(0)
        self.detail = ElidedLabel(" ", elide=Qt.TextElideMode.ElideRight)
        self.eta = QLabel(" ")
        self.plan_text = QPlainTextEdit()
        self.plan_text.setReadOnly(True)
        self.plan_text.setPlaceholderText("The plan appears here (Plan).")
        self.plan_text.setFixedHeight(110)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("The evaluation's log appears here.")

        layout = QVBoxLayout(self)
        layout.addWidget(self.form_box)
        layout.addWidget(self.lab_note)
        layout.addLayout(buttons)
        layout.addWidget(resume)
        add_progress_rows(layout, self.status, self.bar, self.detail, self.eta)
        layout.addWidget(QLabel("Plan:"))
        layout.addWidget(self.plan_text)
        layout.addWidget(QLabel("Log:"))
        layout.addWidget(self.log, 1)
        self.resize(760, 820)

        controller.labChecked.connect(self._lab_checked)
        controller.stateChanged.connect(self._state_changed)
        controller.progressChanged.connect(self._progress)
        controller.logLine.connect(self.log.appendPlainText)
        controller.planReady.connect(self._plan_ready)
        controller.finished.connect(self._finished)
        controller.cancelled.connect(self._cancelled)
        controller.failed.connect(self._failed)
        self.output.textChanged.connect(self._update_buttons)
        self.set_form(EvaluationForm.load(settings))
        self._state_changed(controller.state)
        controller.check_lab()

    # ------------------------------------------------------------------ the form
    def _with_chooser(self, edit: QLineEdit, title: str) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        button = QPushButton("Choose…")
        button.clicked.connect(lambda: self._choose_into(edit, title))
        row.addWidget(button)
        return row

    def _choose_into(self, edit: QLineEdit, title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, title, edit.text() or str(self.dataset_dir() or Path.home()))
        if folder:
            edit.setText(folder)

    def _add_test(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Test folder (real frames + masks never trained on)",
                                                  str(self.dataset_dir() or Path.home()))
        if folder:
            self.tests.appendPlainText(folder)

    def set_form(self, form: EvaluationForm) -> None:
        self.tests.setPlainText(form.tests)
        self.normals.setText(form.normals)
        self.output.setText(form.output)
        self.fractions.setText(form.fractions)
        self.seeds.setValue(form.seeds)
        self.subset_draws.setValue(form.subset_draws)
        self.max_steps.setValue(form.max_steps)
        self.threads.setValue(form.threads)
        for arm in (*ARMS, *MIXES):
            self.arm_boxes[arm.field].setChecked(getattr(form, arm.field))
        self.fresh.setChecked(form.fresh)
        self.refresh_dataset()

    def form(self) -> EvaluationForm:
        train = self.dataset_dir()
        output = self.output.text().strip()
        default = default_output(train, self.subset_draws.value()) if train is not None else None
        if default is not None and output and Path(output).expanduser() == default:
            output = ""  # the default follows the dataset (and the draw)
        return EvaluationForm(tests=self.tests.toPlainText().strip(), normals=self.normals.text().strip(),
                              output=output, fractions=self.fractions.text().strip(), seeds=self.seeds.value(),
                              subset_draws=self.subset_draws.value(),
                              max_steps=self.max_steps.value(), threads=self.threads.value(),
                              fresh=self.fresh.isChecked(),
                              **{arm.field: self.arm_boxes[arm.field].isChecked() for arm in (*ARMS, *MIXES)})

    def save_form(self) -> None:
        self.form().save(self.settings)

    def refresh_dataset(self) -> None:
        """The open dataset as the training frames, and the output folder's default beside it."""
        train = self.dataset_dir()
        self.train_label.setText(f"{train}  (the open folder: frames + masks)" if train else
                                 "no dataset open — open a folder of frames + masks first")
        if train is not None:
            self.output.setPlaceholderText(str(default_output(train, self.subset_draws.value())))
        self._show_seeds_default()
        self._update_buttons()

    def _show_seeds_default(self) -> None:
        """Seeds' "default" says what it means here: one seed a draw over subset draws, else the lab's rule."""
        defaults = self.controller.defaults()
        if self.subset_draws.value():
            self.seeds.setSpecialValueText("default (1 a draw)")
        elif defaults:
            self.seeds.setSpecialValueText(f"default ({defaults['seeds_small']} at fractions ≤ "
                                           f"{defaults['small_fraction']:g}, {defaults['seeds_large']} above)")
        else:
            self.seeds.setSpecialValueText("default")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh_dataset()

    def closeEvent(self, event) -> None:
        self.save_form()
        super().closeEvent(event)

    # ------------------------------------------------------------------ plan, start, report
    def _settings(self):
        """The engine's settings for the form (writes the arms' job files); None (and a message) if not."""
        self.save_form()
        try:
            return self.controller.curve_settings(self.form(), self.dataset_dir(), self.job_values())
        except (PolypForgeError, OSError) as exc:
            self._show_error("The evaluation cannot start", exc)
            return None

    def plan(self) -> bool:
        if self.controller.busy:
            return False
        settings = self._settings()
        if settings is None:
            return False
        self.plan_text.setPlainText("Reading the frames and timing a training step…")
        self.controller.plan(settings)
        return True

    def start(self) -> bool:
        if self.controller.busy:
            return False
        settings = self._settings()
        if settings is None:
            return False
        self.log.appendPlainText(f"— started: output {settings.out}" + (" (starting over)" if settings.fresh else ""))
        self.bar.setValue(0)
        self.fresh.setChecked(False)  # once: the next Start resumes what this one leaves
        self.controller.start(settings)
        return True

    def report_file(self) -> Path | None:
        """The output folder's report.html (it may not exist yet)."""
        path = report_path(self.form(), self.dataset_dir())
        if path is None and self.controller.settings is not None:
            path = Path(self.controller.settings.out) / report_name(self.controller.settings.subset_draws)
        return path

    def open_report(self, path: Path | None = None) -> bool:
        path = Path(path) if path is not None else self.report_file()
        if path is None or not path.is_file():
            show_error(self, "No report yet", f"{path or 'The output folder'}: no report yet — start the evaluation "
                                              "first (it writes the report after every run).")
            return False
        self.last_report = path
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            QMessageBox.information(self, "Evaluation report", f"The report is at {path} (no browser could be "
                                                               "opened).")
            return False
        return True

    # ------------------------------------------------------------------ the controller's signals
    def _lab_checked(self, problem: str) -> None:
        self.lab_note.setText(problem)
        self.lab_note.setVisible(bool(problem))
        defaults = self.controller.defaults()
        if defaults:
            self.fractions.setPlaceholderText(", ".join(f"{f:g}" for f in defaults["fractions"]) + " (default)")
            self.max_steps.setSpecialValueText(f"default ({defaults['max_steps']})")
        self._show_seeds_default()
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self.controller.busy
        can_run = self.controller.lab is not None and self.dataset_dir() is not None and not busy
        self.plan_button.setEnabled(can_run)
        self.start_button.setEnabled(can_run)
        self.cancel_button.setEnabled(self.controller.state == "running")
        self.form_box.setEnabled(not busy)
        report = self.report_file()
        self.report_button.setEnabled(report is not None and report.is_file())

    def _state_changed(self, state: str) -> None:
        if state == "planning":
            self.status.setText("Planning: reading the frames and timing a training step…")
        elif state == "running":
            self.status.setText("Starting: reading the frames, timing a training step…")
        elif state == "cancelling":
            self.status.setText("Cancelling: stops within a training step…")
        self._update_buttons()

    def _progress(self, event) -> None:
        total, done = event.steps_total, event.steps_done
        if total > 0:
            self.bar.setValue(min(BAR_STEPS, round(done / total * BAR_STEPS)))
        if event.phase == "done":
            self.bar.setValue(BAR_STEPS)
        where = event.run or ""
        if event.phase == "train":
            text = f"Training {where}: step {done} of {total} (all runs left)"
        elif event.phase == "generate":
            text = event.message or f"Generating {where}"
        elif event.phase == "score":
            text = f"Scoring {where} on the test sets"
        else:
            text = event.message or where or "Finishing"
        if self.controller.state == "running":
            self.status.setText(text)
        self.detail.setText(event.message if event.phase == "generate" else where)
        self.eta.setText(f"about {format_seconds(event.eta_seconds)} left" if event.eta_seconds is not None
                         else "estimating time left…")

    def _plan_ready(self, lines: list) -> None:
        self.plan_text.setPlainText("\n".join(lines))
        self.status.setText("Planned. Start runs it (or resumes it in the same output folder).")
        self._update_buttons()

    def _finished(self, data) -> None:
        self.bar.setValue(BAR_STEPS)
        html = Path(data["html"])
        self.status.setText(f"Finished: {data.get('runs_done', '?')} run(s); the report is {html}")
        self.eta.setText("")
        for verdict in data.get("verdicts", []):
            self.log.appendPlainText(verdict["text"])
        self.log.appendPlainText(f"— finished: {html}")
        self._update_buttons()
        self.open_report(html)

    def _cancelled(self, message: str) -> None:
        self.status.setText("Cancelled. Start again with the same output folder to resume it.")
        self.eta.setText("")
        self.log.appendPlainText(f"— cancelled: {message}. {RESUME_NOTE}")
        self._update_buttons()

    def _failed(self, exc: BaseException, details: str) -> None:
        self.status.setText("Stopped by an error (see the message).")
        self.eta.setText("")
        self.log.appendPlainText(f"— stopped: {exc}")
        self._update_buttons()
        self._show_error("The evaluation stopped", exc, details)

    def _show_error(self, heading: str, exc: BaseException, details: str = "") -> None:
        """One message naming the file (the engine's errors), never a traceback; unexpected errors are logged."""
        title, text, extra = describe_error(exc)
        if isinstance(exc, PolypForgeError):  # the engine's one line, with the dialog's way to start over
            text = str(exc) + (FRESH_HINT if "--fresh" in str(exc) else "")
        show_error(self, f"{heading}: {title.lower()}", text, details or extra)
