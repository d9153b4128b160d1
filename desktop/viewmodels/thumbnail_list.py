"""The part the frame list and the review gallery share: items with a key, their rows, a thumbnail loader."""

from __future__ import annotations

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject

from desktop.workers.thumbnails import ThumbnailLoader


class ThumbnailListModel(QAbstractListModel):
    """A flat list of items (each with a ``key``) whose thumbnails load in the background."""

    def __init__(self, loader: ThumbnailLoader, parent: QObject | None = None):
        super().__init__(parent)
        self.items: list = []
        self._rows: dict[str, int] = {}
        self.loader = loader
        loader.ready.connect(self._thumbnail_ready)

    def set_items(self, items: list) -> None:
        self.beginResetModel()
        self.loader.clear()
        self.items = items
        self._rows = {item.key: row for row, item in enumerate(items)}
        self.endResetModel()

    def row_of(self, key: str) -> int:
        return self._rows.get(key, -1)

    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.items)

    def _thumbnail_ready(self, key: str) -> None:  # overridden by subclasses
        raise NotImplementedError
