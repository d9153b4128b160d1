"""The main window: tabs (Frames, Editor, Run, Review) beside the job settings; menus and a toolbar
(main_actions.py), the settings column with the Run button (job_column.py).

It creates the view-models, connects them to the views and turns every failure into a message box
naming the file (desktop.errors). It reaches the engine only through the view-models: reading a frame is
DatasetController's, the job (its spec, its output folder) JobController's, the review ReviewController's,
an evaluation (Evaluate…: the learning curve on the open dataset) EvaluationController's.
From engine.errors it takes InputError, the curator's error that the view-models raise."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QWidget,
)

from desktop.errors import RESUME_HINT, describe_error, show_error, show_exception
from desktop.settings import JobSettings, open_settings
from desktop.viewmodels.bundles import BundleListModel
from desktop.viewmodels.captions import CaptionController
from desktop.viewmodels.dataset import DatasetController, FrameItem
from desktop.viewmodels.evaluation import EvaluationController
from desktop.viewmodels.job import JobController
from desktop.viewmodels.mask_editor import MaskEditor
from desktop.viewmodels.retrieval import RetrievalController
from desktop.viewmodels.review import ReviewController
from desktop.views.browser import FrameBrowser
from desktop.views.editor import EditorPage
from desktop.views.evaluation_dialog import EvaluationDialog
from desktop.views.gallery import ReviewPage
from desktop.views.job_column import JobColumn
from desktop.views.main_actions import MainActions
from desktop.views.run_page import RunPage
from engine.errors import InputError

TAB_FRAMES, TAB_EDITOR, TAB_RUN, TAB_REVIEW = range(4)


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("PolypForge")
        self.settings = settings if settings is not None else open_settings()
        self.dataset = DatasetController(self)
        self.editor = MaskEditor(self)
        self.job = JobController(self)
        self.review = ReviewController(self)
        self.bundles = BundleListModel(self)
        self.retrieval = RetrievalController(self)
        self.captions = CaptionController(self)
        self.evaluation = EvaluationController(self)
        self.evaluation_dialog: EvaluationDialog | None = None  # made when first opened
        self.current_item: FrameItem | None = None

        self.browser = FrameBrowser(self.dataset)
        self.editor_page = EditorPage(self.editor, self.retrieval)
        self.run_page = RunPage(self.job)
        self.review_page = ReviewPage(self.review)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.browser, "Frames")
        self.tabs.addTab(self.editor_page, "Editor")
        self.tabs.addTab(self.run_page, "Run")
        self.tabs.addTab(self.review_page, "Review")

        self.job_column = JobColumn(self.bundles)
        self.panel, self.run_button = self.job_column.panel, self.job_column.run_button

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.tabs)
        splitter.addWidget(self.job_column)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 0)
        splitter.setChildrenCollapsible(False)
        self.setCentralWidget(splitter)
        self.menu_actions = MainActions(self)
        self._connect()
        self._restore()

    # ------------------------------------------------------------------ construction
    def _connect(self) -> None:
        actions = self.menu_actions
        for action, slot in (
            (actions.open_action, self.choose_folder),
            (actions.review_open_action, self.choose_review_folder),
            (actions.add_bundle_action, self.choose_bundle),
            (actions.run_action, self.run_job),
            (actions.cancel_action, self.job.cancel),
            (actions.output_action, self.open_output_folder),
            (actions.evaluate_action, self.open_evaluation),
            (actions.quit_action, self.close),
        ):
            actions.connect(action, slot)
        self.run_button.clicked.connect(self.run_job)
        self.browser.openRequested.connect(self.open_frame)
        self.browser.openFolderRequested.connect(self.choose_folder)
        self.dataset.loaded.connect(self._dataset_loaded)
        self.dataset.failed.connect(self._dataset_failed)
        self.editor_page.navigate.connect(self.step_frame)
        self.editor_page.saveRequested.connect(self.save_mask)
        self.editor_page.databaseChosen.connect(self.retrieval.open_database)
        self.editor_page.caption_panel.saveRequested.connect(self.save_caption)
        self.captions.changed.connect(self._show_caption)
        self.retrieval.opened.connect(self._database_opened)
        self.retrieval.failed.connect(lambda exc: show_exception(self, exc))
        self.job.stateChanged.connect(self._job_state)
        self.job.jobDone.connect(self._job_done)
        self.job.cannotStart.connect(self._job_cannot_start)
        self.job.crashed.connect(self._job_crashed)
        self.run_page.cancelRequested.connect(self.job.cancel)
        self.run_page.openOutputRequested.connect(self.open_output_folder)
        self.run_page.reviewRequested.connect(lambda: self.tabs.setCurrentIndex(TAB_REVIEW))
        self.review_page.openOutputRequested.connect(self.open_output_folder)
        self.review.failed.connect(lambda exc: show_exception(self, exc))
        self.panel.changed.connect(self._settings_changed)
        self.panel.addBundleRequested.connect(self.choose_bundle)
        self.tabs.currentChanged.connect(self._tab_changed)

    def _restore(self) -> None:
        s = self.settings
        self.panel.set_settings(JobSettings.load(s))
        self.captions.set_path(self.panel.captions.text())
        self.bundles.scan(self._extra_bundles(), self.panel.provider.currentData())
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1360, 860)
        last = s.value("paths/input", "")
        if last and Path(str(last)).is_dir():
            self.open_folder(str(last))
        db = s.value("retrieval/db", "")
        if db and self.retrieval.available and Path(str(db)).is_dir():
            self.retrieval.open_database(str(db))
        self.statusBar().showMessage("Ready")

    def _extra_bundles(self) -> list[str]:
        value = self.settings.value("bundles/extra", "")
        return [v for v in str(value or "").split("\n") if v]

    # ------------------------------------------------------------------ dataset and editor
    def choose_folder(self) -> None:
        start = str(self.settings.value("paths/input", "") or Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Folder of frames", start)
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | Path) -> None:
        """Discover the frames (on a worker thread); failures show as a message box."""
        if not self._leave_frame():
            return
        self.statusBar().showMessage(f"Opening {folder}…")
        self.dataset.open(folder)

    def _dataset_loaded(self, sources) -> None:
        self.editor.unload()
        self.current_item = None
        self._show_caption()
        self.settings.setValue("paths/input", str(sources.input_dir))
        self.menu_actions.evaluate_action.setEnabled(True)
        if self.evaluation_dialog is not None:
            self.evaluation_dialog.refresh_dataset()
        if not self.panel.output.text().strip():
            self.panel.output.setText(str(sources.input_dir.parent / f"{sources.input_dir.name}-generated"))
            self._settings_changed()
        counts = sources.counts_by_split()
        self.statusBar().showMessage(
            f"{len(sources.frames)} frames in {sources.input_dir} "
            f"(train {counts['train']}, val {counts['val']}, test {counts['test']})")
        self.tabs.setCurrentIndex(TAB_FRAMES)

    def _dataset_failed(self, exc: BaseException) -> None:
        self.statusBar().showMessage("Could not open that folder" + (
            f"; still showing {self.dataset.input_dir}" if self.dataset.input_dir else ""))
        show_exception(self, exc)

    def open_frame(self, item: FrameItem) -> bool:
        """Show a frame in the editor with its mask and labels; a bad file is a message naming it."""
        if not self._leave_frame():
            return False
        try:
            opened = self.dataset.read_for_editing(item)
        except InputError as exc:
            show_exception(self, exc)
            return False
        if opened.mask_problem is not None:
            show_error(self, "The frame's mask cannot be read",
                       f"{opened.mask_problem}\n\nThe editor starts with an empty mask; saving replaces the file.")
        if opened.labels_problem is not None:
            show_exception(self, opened.labels_problem)
        self.current_item = item
        self.editor.load(opened.frame, opened.mask, self.dataset.mask_target(item), item, item.frame.mask_path)
        self.editor_page.canvas.labels = opened.labels
        self._show_caption()
        self.tabs.setCurrentIndex(TAB_EDITOR)
        self.editor_page.canvas.setFocus()
        self.retrieval.propose(opened.frame)
        return True

    def step_frame(self, delta: int) -> None:
        items = self.browser.visible_items()
        if not items:
            return
        keys = [item.key for item in items]
        current = keys.index(self.current_item.key) if self.current_item and self.current_item.key in keys else -delta
        row = current + delta
        if 0 <= row < len(items):
            self.open_frame(items[row])

    def save_mask(self) -> Path | None:
        if not self.editor.active:
            return None
        try:
            path = self.editor.save()
        except OSError as exc:
            show_exception(self, exc)
            return None
        if self.current_item is not None:
            self.dataset.mask_saved(self.current_item, path)
        self.statusBar().showMessage(f"Mask saved to {path}", 5000)
        return path

    def _leave_frame(self) -> bool:
        """Save the drawn mask and the edited caption before the editor shows something else (False if
        saving failed)."""
        if self.editor_page.caption_panel.dirty and self.save_caption() is None:
            return False
        if self.editor.active and self.editor.dirty:
            return self.save_mask() is not None
        return True

    # ------------------------------------------------------------------ captions
    def _show_caption(self) -> None:
        panel = self.editor_page.caption_panel
        captions = self.captions
        if captions.path is None:
            panel.show_caption(None, "")
        elif self.current_item is None or not self.editor.active:
            panel.show_caption(None, str(captions.path))
        else:
            caption = captions.caption_of(self.current_item.frame.rel)
            panel.show_caption(caption, captions.path.name, captions.problem)

    def save_caption(self) -> str | None:
        """Write the edited caption into the captions file the job reads; None (and a message) if not."""
        panel = self.editor_page.caption_panel
        if self.current_item is None or not panel.dirty:
            return None
        try:
            key = self.captions.save(self.current_item.frame.rel, panel.text())
        except (InputError, OSError) as exc:
            show_exception(self, exc)
            return None
        self.statusBar().showMessage(f"Caption of {key} saved to {self.captions.path}", 5000)
        return key

    def _database_opened(self, folder: str) -> None:
        self.settings.setValue("retrieval/db", folder)
        self.retrieval.propose(self.editor.frame if self.editor.active else None)

    # ------------------------------------------------------------------ the job
    def job_values(self) -> dict:
        """The job's keys: the settings, the opened folder and, for mask source "retrieved", the database."""
        s = self.panel.settings()
        values = s.spec_values(self.dataset.input_dir, self.dataset.masks_dir)
        if s.mask_source == "retrieved":
            values.update(self.retrieval.spec_values())
        return values

    def run_job(self) -> bool:
        """Build the job from the settings and start it on a worker thread; False (with a message) if not."""
        if self.job.running:
            return False
        if self.dataset.sources is None:
            show_error(self, "No frames folder", "Open a folder of frames first (File ▸ Open frames folder…).")
            return False
        if not self._leave_frame():
            return False
        s = self.panel.settings()
        if not s.output:
            show_error(self, "No output folder", "Choose the folder the dataset is written to (Output ▸ Folder).")
            return False
        row = self.bundles.row_for(s.model) if s.model else -1
        if row >= 0 and self.bundles.rows[row].state == "broken":
            show_error(self, "Model bundle cannot be used", self.bundles.rows[row].problem)
            return False
        if s.mask_source == "retrieved" and self.retrieval.db_path is None:
            show_error(self, "No retrieval database", self.retrieval.note if not self.retrieval.available else
                       "Mask source “retrieved” needs a retrieval database: choose one in the Editor tab "
                       "(Retrieval proposals ▸ Choose database folder…). Make one with `main.py db build`.")
            return False
        output = Path(s.output).expanduser()
        problem = self.job.output_problem(output)
        if problem is not None:
            show_error(self, "The output folder is in use", problem)
            return False
        if not s.resume and self.job.holds_earlier_job(output):
            answer = QMessageBox.question(
                self, "Start over?", f"{output} holds an earlier job. Starting over deletes its generated images, "
                "masks, labels and manifest. Continue?")
            if answer != QMessageBox.StandardButton.Yes:
                return False
        try:
            spec = self.job.spec_from(self.job_values())
        except InputError as exc:
            show_exception(self, exc)
            return False
        self.job.start(spec)
        self.tabs.setCurrentIndex(TAB_RUN)
        return True

    def _job_state(self, state: str) -> None:
        self.menu_actions.show_job_state(state)
        self.job_column.show_job_state(state)

    def _job_done(self, summary) -> None:
        if self.job.spec is not None:
            self.bundles.confirm_provider(Path(self.job.spec.model), summary.provider)
        self.statusBar().showMessage(f"Job {summary.status}: {summary.ok} written, {summary.failed} failed, "
                                     f"{summary.skipped} skipped", 10000)
        try:
            self.review.load(summary.output)
        except InputError as exc:
            show_exception(self, exc)

    def _job_cannot_start(self, message: str) -> None:
        if "--fresh" in message:
            message += RESUME_HINT
        show_error(self, "The job could not start", message)

    def _job_crashed(self, exc: BaseException, details: str) -> None:
        title, text, extra = describe_error(exc)
        show_error(self, f"The job stopped: {title.lower()}", text, details or extra)

    # ------------------------------------------------------------------ review and output
    def choose_review_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder of a job", self.panel.output.text())
        if folder:
            self.load_review(folder)

    def load_review(self, folder: str | Path) -> bool:
        try:
            self.review.load(folder)
        except InputError as exc:
            show_exception(self, exc)
            return False
        self.tabs.setCurrentIndex(TAB_REVIEW)
        return True

    def output_folder(self) -> Path | None:
        if self.job.summary is not None:
            return Path(self.job.summary.output)
        if self.review.output is not None:
            return self.review.output
        text = self.panel.output.text().strip()
        return Path(text).expanduser() if text else None

    def open_output_folder(self) -> bool:
        folder = self.output_folder()
        if folder is None or not folder.is_dir():
            show_error(self, "No output folder yet", f"{folder or 'The output folder'}: does not exist yet — run a job first.")
            return False
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            show_error(self, "Cannot open the folder", f"{folder}: no file manager answered. Open it by hand.")
            return False
        return True

    def choose_bundle(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder (holds bundle.json)")
        if folder:
            self.add_bundle(folder)

    def add_bundle(self, folder: str | Path) -> None:
        """Add a bundle folder to the list (remembered); it is verified on a worker thread."""
        folder = str(Path(folder).expanduser())
        extra = self._extra_bundles()
        if folder not in extra:
            self.settings.setValue("bundles/extra", "\n".join(extra + [folder]))
        self.bundles.add(Path(folder))
        self.panel.select_bundle(folder)
        self._settings_changed()

    # ------------------------------------------------------------------ evaluation
    def open_evaluation(self) -> EvaluationDialog | None:
        """The Evaluate… dialog (modeless; one per window, so a running evaluation shows when it is reopened)."""
        if self.dataset.sources is None:
            show_error(self, "No frames folder", "Open a folder of frames + masks first (File ▸ Open frames folder…): "
                       "the evaluation trains on it.")
            return None
        if self.evaluation_dialog is None:
            self.evaluation_dialog = EvaluationDialog(self.evaluation, self.settings, lambda: self.dataset.input_dir,
                                                      self.job_values, self)
        self.evaluation_dialog.show()
        self.evaluation_dialog.raise_()
        self.evaluation_dialog.activateWindow()
        return self.evaluation_dialog

    # ------------------------------------------------------------------ settings, closing
    def _settings_changed(self) -> None:
        self.panel.settings().save(self.settings)
        self.captions.set_path(self.panel.captions.text())
        provider = self.panel.provider.currentData()
        if provider != self.bundles.provider:
            self.bundles.scan(self._extra_bundles(), provider)

    def _tab_changed(self, index: int) -> None:
        if index == TAB_REVIEW:
            self.review_page.list.setFocus()

    def shutdown(self) -> None:
        """Stop the job (keeps what it wrote) and wait for every worker thread."""
        if self.job.running:
            self.job.cancel()
            self.job.wait(120_000)
        if self.evaluation.busy:
            self.evaluation.cancel()  # it resumes from its last checkpoint when started again
        self.evaluation.wait(120_000)
        for runner in (self.dataset, self.review, self.bundles, self.retrieval, self.run_page.report_tasks):
            runner.wait(30_000)
        for loader in (self.dataset.loader, self.review.loader):
            loader.wait(30_000)

    def closeEvent(self, event) -> None:
        if self.job.running:
            answer = QMessageBox.question(self, "A job is running",
                                          "Cancel the job and quit? What it has written is kept.")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        if self.evaluation.busy:
            answer = QMessageBox.question(self, "An evaluation is running",
                                          "Cancel the evaluation and quit? Started again into the same output folder, "
                                          "it resumes: finished runs are kept.")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        if self.evaluation_dialog is not None:
            self.evaluation_dialog.save_form()
        if self.editor_page.caption_panel.dirty:
            self.save_caption()
        if self.editor.active and self.editor.dirty:
            self.save_mask()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.panel.settings().save(self.settings)
        self.settings.sync()
        self.shutdown()
        super().closeEvent(event)


