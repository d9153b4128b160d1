"""The editor's caption box: the open frame's caption from the captions file the job reads (the text an
sd-controlnet bundle is prompted with), its measured attributes, and an editor to change the text."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGroupBox, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout

from desktop.viewmodels.captions import FrameCaption, attributes_line

NO_FILE = ("No captions file: set “Captions file” in the job settings (make one with "
           "<code>main.py caption --input FRAMES --out captions.csv</code>).")


class CaptionPanel(QGroupBox):
    saveRequested = Signal()

    def __init__(self, parent=None):
        super().__init__("Caption (sd-controlnet prompt)", parent)
        self.status = QLabel(NO_FILE)
        self.status.setWordWrap(True)
        self.edit = QPlainTextEdit()
        self.edit.setPlaceholderText("The polyp is …")
        self.edit.setMaximumHeight(96)
        self.edit.setToolTip("The text the batch job uses as this frame's prompt; saved into the captions file")
        self.attributes = QLabel()
        self.attributes.setWordWrap(True)
        self.attributes.setStyleSheet("color: #666;")
        self.vlm = QLabel()
        self.vlm.setWordWrap(True)
        self.vlm.setStyleSheet("color: #666;")
        self.save_button = QPushButton("Save caption")
        self.save_button.clicked.connect(self.saveRequested)
        layout = QVBoxLayout(self)
        for widget in (self.status, self.edit, self.attributes, self.vlm, self.save_button):
            layout.addWidget(widget)
        self._shown = ""
        self.edit.textChanged.connect(self._update_button)
        self.show_caption(None, "")

    @property
    def dirty(self) -> bool:
        return self.isEnabled() and self.text() != self._shown and bool(self.text())

    def text(self) -> str:
        return " ".join(self.edit.toPlainText().split())

    def show_caption(self, caption: FrameCaption | None, where: str, problem: str = "") -> None:
        """`caption` None: no captions file (or no frame); `where` names the file."""
        usable = caption is not None and not problem
        self.setEnabled(usable)
        self._shown = caption.text if usable else ""
        self.edit.blockSignals(True)
        self.edit.setPlainText(self._shown)
        self.edit.blockSignals(False)
        if problem:
            self.status.setText(f"Cannot read the captions file: {problem}")
        elif caption is None:
            self.status.setText(NO_FILE if not where else "No frame open.")
        elif caption.key is None:
            self.status.setText(f"No caption for this frame in {where} yet: the job prompts it with the "
                                "job's prompt. Type one and save it.")
        else:
            source = {"measured": "measured", "curator": "edited by a curator"}.get(caption.source, "from the file")
            self.status.setText(f"{where}, row “{caption.key}” ({source})")
        self.attributes.setText(attributes_line(caption.attributes) if usable else "")
        self.vlm.setText(f"Vision-language model: {caption.vlm_text}" if usable and caption.vlm_text else "")
        self._update_button()

    def _update_button(self) -> None:
        self.save_button.setEnabled(self.dirty)
