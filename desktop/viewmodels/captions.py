"""The captions file the job will read (the settings' "Captions file"): a frame's caption to show, and the
curator's edit of it saved back (engine.dataset.caption_writer.set_caption: atomic, the rest of the file
kept, the row marked source "curator"). Reading and writing are the engine's; this only caches the file
by its stat so the editor does not re-read it per frame."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from engine.dataset.caption_writer import set_caption
from engine.dataset.captions import CaptionTable, frame_row_key, read_caption_table
from engine.errors import InputError


@dataclass
class FrameCaption:
    text: str = ""  # "" when the file has none for the frame
    key: str | None = None  # the row's key in the file (None: no row yet)
    source: str = ""  # "measured", "curator", "" (a file from elsewhere)
    attributes: dict = field(default_factory=dict)  # the captioner's measured attributes, when present
    vlm_text: str = ""


class CaptionController(QObject):
    changed = Signal()  # another file, or the file changed
    saved = Signal(str, str)  # frame key, text

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.path: Path | None = None
        self.problem = ""  # why the file cannot be read ("" when it can)
        self._table: CaptionTable | None = None
        self._stat: tuple | None = None

    def set_path(self, text: str | None) -> None:
        path = Path(text).expanduser() if text and text.strip() else None
        if path != self.path:
            self.path, self._table, self._stat = path, None, None
            self.changed.emit()

    def _load(self) -> CaptionTable | None:
        self.problem = ""
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._table, self._stat = None, None
            return None  # a new file: the first saved caption creates it
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if self._table is None or self._stat != key:
            try:
                self._table, self._stat = read_caption_table(self.path), key
            except InputError as exc:
                self._table, self._stat = None, None
                self.problem = str(exc)
        return self._table

    def caption_of(self, frame_rel: str) -> FrameCaption:
        table = self._load()
        if table is None:
            return FrameCaption()
        rows = {row.key: row for row in table.rows}
        key = frame_row_key(rows, frame_rel)
        if key is None:
            return FrameCaption()
        row = rows[key]
        attributes = row.extra.get("attributes") or {}
        if isinstance(attributes, str):
            try:
                attributes = json.loads(attributes)
            except ValueError:
                attributes = {}
        return FrameCaption(text=row.text, key=key, source=str(row.extra.get("source") or ""),
                            attributes=attributes if isinstance(attributes, dict) else {},
                            vlm_text=str(row.extra.get("vlm_text") or ""))

    def save(self, frame_rel: str, text: str) -> str:
        """Write the frame's caption; InputError (unreadable file, empty text) or OSError propagate."""
        if self.path is None:
            raise InputError("no captions file chosen: set “Captions file” in the job settings first")
        key = set_caption(self.path, frame_rel, text)
        self._table, self._stat = None, None
        self.saved.emit(key, text)
        self.changed.emit()
        return key


def attributes_line(attributes: dict) -> str:
    """'red · smooth · large · oval · raised · centre · background: debris · lighting: specular highlights'."""
    if not attributes:
        return ""
    words = [str(attributes[k]) for k in ("colour", "surface", "size", "outline", "elevation", "position")
             if attributes.get(k)]
    background = attributes.get("background")
    words.append("background: " + (", ".join(background) if background else "clean mucosa"))
    if attributes.get("lighting"):
        words.append("lighting: " + ", ".join(attributes["lighting"]))
    if attributes.get("polyps", 1) > 1:
        words.insert(0, f"largest of {attributes['polyps']} polyps:")
    return " · ".join(words)
