"""The frame editor: the frame large with its mask (green fill) and labels (yellow), drawing tools
(brush, eraser, rectangle, polygon; undo/redo, clear, save), retrieval proposals for the frame, and its
caption (the prompt an sd-controlnet bundle gets), editable."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.viewmodels.mask_editor import MaskEditor
from desktop.viewmodels.retrieval import RetrievalController
from desktop.views.caption_panel import CaptionPanel
from desktop.views.mask_canvas import MaskCanvas

TOOLS = (("brush", "Brush", "B"), ("eraser", "Eraser", "E"), ("rectangle", "Rectangle", "R"), ("polygon", "Polygon", "P"))


class EditorPage(QWidget):
    """Toolbar + canvas + side panel (frame info, caption, retrieval proposals)."""

    navigate = Signal(int)  # -1 previous, +1 next frame
    saveRequested = Signal()
    databaseChosen = Signal(str)

    def __init__(self, editor: MaskEditor, retrieval: RetrievalController, parent: QWidget | None = None):
        super().__init__(parent)
        self.editor = editor
        self.retrieval = retrieval
        self.canvas = MaskCanvas(editor)

        self.toolbar = QToolBar()
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        group = QActionGroup(self)
        self.tool_actions: dict[str, QAction] = {}
        for name, text, key in TOOLS:
            action = QAction(f"{text} ({key})", self, checkable=True)
            action.setShortcut(QKeySequence(key))
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.triggered.connect(lambda checked=False, n=name: self.canvas.set_tool(n))
            group.addAction(action)
            self.toolbar.addAction(action)
            self.addAction(action)
            self.tool_actions[name] = action
        self.tool_actions["brush"].setChecked(True)
        self.toolbar.addSeparator()
        self.toolbar.addWidget(QLabel(" Size "))
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setRange(1, 120)
        self.size_slider.setValue(self.canvas.radius)
        self.size_slider.setFixedWidth(110)
        self.size_slider.valueChanged.connect(self._set_radius)
        self.toolbar.addWidget(self.size_slider)
        self.size_label = QLabel(f" {self.canvas.radius} px ")
        self.toolbar.addWidget(self.size_label)
        self.toolbar.addSeparator()
        self.undo_action = self._action("Undo", QKeySequence.StandardKey.Undo, editor.undo)
        self.redo_action = self._action("Redo", QKeySequence.StandardKey.Redo, editor.redo)
        self.clear_action = self._action("Clear", None, editor.clear)
        self.save_action = self._action("Save mask", QKeySequence.StandardKey.Save, self.saveRequested.emit)
        self.prev_action = self._action("◀ Previous", QKeySequence(Qt.Key.Key_PageUp),
                                        lambda: self.navigate.emit(-1), toolbar=False)
        self.next_action = self._action("Next ▶", QKeySequence(Qt.Key.Key_PageDown),
                                        lambda: self.navigate.emit(1), toolbar=False)
        self.prev_action.setToolTip("Previous frame of the Frames tab (Page Up); the mask is saved first")
        self.next_action.setToolTip("Next frame of the Frames tab (Page Down); the mask is saved first")
        prev_button, next_button = QToolButton(), QToolButton()
        prev_button.setDefaultAction(self.prev_action)
        next_button.setDefaultAction(self.next_action)
        navigation = QHBoxLayout()
        navigation.addWidget(prev_button)
        navigation.addWidget(next_button)
        navigation.addStretch(1)

        # side panel
        self.frame_label = QLabel("No frame open")
        self.frame_label.setWordWrap(True)
        self.mask_label = QLabel()
        self.mask_label.setWordWrap(True)
        self.help_label = QLabel(
            "Brush/eraser: drag. Rectangle: drag. Polygon: click the corners, then double-click, press Enter "
            "or click the first corner; Backspace removes a corner, Esc cancels.\nThe mask is saved beside the "
            "frames, where the job reads it: mask source “Drawn / mask file” paints (or removes) there; “Random "
            "place” takes it as the outline of a real polyp, keeps its label and paints new polyps elsewhere.")
        self.help_label.setWordWrap(True)
        self.help_label.setStyleSheet("color: #666;")
        side = QVBoxLayout()
        side.addLayout(navigation)
        side.addWidget(self.frame_label)
        side.addWidget(self.mask_label)
        side.addWidget(self.help_label)
        self.caption_panel = CaptionPanel()
        side.addWidget(self.caption_panel)
        side.addWidget(self._retrieval_box())
        side.addStretch(1)
        side_widget = QWidget()
        side_widget.setLayout(side)
        side_widget.setFixedWidth(290)

        body = QHBoxLayout()
        body.addWidget(self.canvas, 1)
        body.addWidget(side_widget)
        layout = QVBoxLayout(self)
        layout.addWidget(self.toolbar)
        layout.addLayout(body, 1)

        editor.changed.connect(self._refresh)
        editor.loaded.connect(self._refresh)
        retrieval.proposalsChanged.connect(self._proposals_changed)
        retrieval.busyChanged.connect(lambda busy: self.retrieval_status.setText("working…" if busy else self._retrieval_text()))
        retrieval.opened.connect(lambda *_: self.retrieval_status.setText(self._retrieval_text()))
        self._refresh()

    def _action(self, text, shortcut, slot, toolbar: bool = True) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        action.triggered.connect(lambda checked=False: slot())
        if toolbar:
            self.toolbar.addAction(action)
        self.addAction(action)
        return action

    def _retrieval_box(self) -> QGroupBox:
        box = QGroupBox("Retrieval proposals")
        layout = QVBoxLayout(box)
        self.retrieval_status = QLabel(self._retrieval_text())
        self.retrieval_status.setWordWrap(True)
        self.db_button = QPushButton("Choose database folder…")
        self.db_button.clicked.connect(self._choose_database)
        row = QHBoxLayout()
        row.addWidget(QLabel("Top K"))
        self.top_k = QSpinBox()
        self.top_k.setRange(1, 20)
        self.top_k.setValue(self.retrieval.top_k)
        self.top_k.valueChanged.connect(self._set_top_k)
        row.addWidget(self.top_k)
        row.addStretch(1)
        self.proposal_list = QListWidget()
        self.proposal_list.setMaximumHeight(120)
        self.proposal_list.currentRowChanged.connect(self._select_proposal)
        self.use_proposal = QPushButton("Use selected proposal as the mask")
        self.use_proposal.clicked.connect(self._use_proposal)
        self.explain_button = QPushButton("Show how it was found…")
        self.explain_button.setToolTip("The explain picture: this frame, the best database candidate with its "
                                       "mask, the patch matches and the proposal")
        self.explain_button.clicked.connect(self.show_explain)
        for widget in (self.retrieval_status, self.db_button):
            layout.addWidget(widget)
        layout.addLayout(row)
        layout.addWidget(self.proposal_list)
        layout.addWidget(self.use_proposal)
        layout.addWidget(self.explain_button)
        if not self.retrieval.available:
            box.setEnabled(False)
            self.retrieval_status.setToolTip(self.retrieval.detail)
            self.proposal_list.hide()
            self.use_proposal.hide()
            self.explain_button.hide()
        return box

    def _retrieval_text(self) -> str:
        if not self.retrieval.available:
            return self.retrieval.note
        if self.retrieval.db_path is None:
            return "No database chosen."
        count = len(self.retrieval.proposals)
        refused = f", {self.retrieval.refusals} refused" if self.retrieval.refusals else ""
        return f"{self.retrieval.db_path.name}: {count} proposal(s){refused}"

    def _choose_database(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Retrieval database folder")
        if folder:
            self.databaseChosen.emit(folder)

    def _set_top_k(self, value: int) -> None:
        self.retrieval.top_k = value
        self.retrieval.propose(self.editor.frame if self.editor.active else None)

    def _proposals_changed(self) -> None:
        self.proposal_list.clear()
        for index in range(len(self.retrieval.proposals)):
            self.proposal_list.addItem(self.retrieval.describe(index))
            self.proposal_list.item(index).setToolTip(self.retrieval.origin(index))
        self.canvas.proposals = list(self.retrieval.proposals)
        self.use_proposal.setEnabled(bool(self.retrieval.proposals))
        self.explain_button.setEnabled(self.retrieval.explain is not None)
        self.canvas.selected_proposal = -1
        self.retrieval_status.setText(self._retrieval_text())
        self.canvas.update()

    def show_explain(self) -> None:
        if self.retrieval.explain is None:
            return
        from desktop.imaging import to_qimage
        from desktop.views.run_page import PreviewLabel

        dialog = QDialog(self)
        dialog.setWindowTitle("Retrieval: how the proposals were found")
        label = PreviewLabel("")
        label.set_image(to_qimage(self.retrieval.explain))
        layout = QVBoxLayout(dialog)
        layout.addWidget(label)
        height, width = self.retrieval.explain.shape[:2]
        dialog.resize(min(width, 1400), min(height, 900))
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        self.explain_dialog = dialog

    def _select_proposal(self, row: int) -> None:
        self.canvas.selected_proposal = row
        self.canvas.update()

    def _use_proposal(self) -> None:
        row = self.proposal_list.currentRow()
        if 0 <= row < len(self.retrieval.proposals) and self.editor.active:
            height, width = self.editor.shape
            self.editor.set_mask(self.retrieval.proposals[row].mask(height, width))

    def _set_radius(self, value: int) -> None:
        self.canvas.radius = value
        self.size_label.setText(f" {value} px ")

    def _refresh(self) -> None:
        editor = self.editor
        active = editor.active
        for action in (*self.tool_actions.values(), self.clear_action, self.save_action):
            action.setEnabled(active)
        self.undo_action.setEnabled(active and editor.can_undo())
        self.redo_action.setEnabled(active and editor.can_redo())
        if not active:
            self.frame_label.setText("No frame open")
            self.mask_label.setText("")
            return
        item = editor.item
        height, width = editor.shape
        name = item.frame.rel if item is not None else "frame"
        self.frame_label.setText(f"<b>{name}</b><br>{width}×{height} px, split {item.frame.split if item else '?'}")
        if editor.dirty:
            state = "unsaved changes (saved when you leave the frame or run the job)"
        elif editor.old_mask_path is not None and editor.old_mask_path.exists():
            state = "saved" if editor.old_mask_path == editor.target else f"from {editor.old_mask_path.name}"
        else:
            state = "no mask yet"
        self.mask_label.setText(f"Mask: {editor.coverage():.1%} of the frame — {state}<br>"
                                f"<span style='color:#666'>{editor.target}</span>")
