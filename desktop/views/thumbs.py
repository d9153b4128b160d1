"""Painting a thumbnail cell (frame browser, review gallery): the image when loaded, a placeholder while
it loads, a red one when the file cannot be read; a caption and small badges under it."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

BADGE_COLOURS = {
    "train": "#546e7a", "val": "#6a1b9a", "test": "#ef6c00",
    "polyp": "#2e7d32", "ok": "#2e7d32", "rejected": "#c62828", "pending": "#777777",
}


class ThumbnailDelegate(QStyledItemDelegate):
    """Cells of a fixed size: thumbnail (THUMB role) above an elided caption and badges (badges(index))."""

    def __init__(self, thumb_size: QSize, thumb_role: int, error_role: int | None = None, parent=None):
        super().__init__(parent)
        self.thumb_size = thumb_size
        self.thumb_role = thumb_role
        self.error_role = error_role

    def sizeHint(self, option, index) -> QSize:
        return QSize(self.thumb_size.width() + 12, self.thumb_size.height() + 44)

    def badges(self, index) -> list[tuple[str, str]]:  # (text, colour)
        return []

    def border(self, index) -> QColor | None:
        return None

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        painter.save()
        rect = option.rect.adjusted(3, 3, -3, -3)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        palette = option.palette
        painter.fillRect(rect, palette.highlight() if selected else palette.base())
        thumb_rect = QRect(rect.left() + 3, rect.top() + 3, self.thumb_size.width(), self.thumb_size.height())
        image = index.data(self.thumb_role)
        if isinstance(image, QImage) and not image.isNull():
            scaled = image.size().scaled(thumb_rect.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(0, 0, scaled.width(), scaled.height())
            target.moveCenter(thumb_rect.center())
            painter.drawImage(target, image)
        else:
            failed = isinstance(image, QImage)  # a null image: loading failed
            painter.fillRect(thumb_rect, QColor("#4a1c1c" if failed else "#2b2b2b"))
            painter.setPen(QColor("#ff8a80" if failed else "#9e9e9e"))
            painter.drawText(thumb_rect, Qt.AlignmentFlag.AlignCenter, "cannot be read" if failed else "loading…")
        border = self.border(index)
        if border is not None:
            painter.setPen(QPen(border, 3))
            painter.drawRect(thumb_rect.adjusted(1, 1, -2, -2))
        # caption and badges
        text_rect = QRect(rect.left() + 4, thumb_rect.bottom() + 3, rect.width() - 8, 18)
        painter.setPen(palette.highlightedText().color() if selected else palette.text().color())
        name = option.fontMetrics.elidedText(str(index.data(Qt.ItemDataRole.DisplayRole) or ""),
                                             Qt.TextElideMode.ElideMiddle, text_rect.width())
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, name)
        font = QFont(option.font)
        font.setPointSizeF(max(6.5, font.pointSizeF() * 0.8))
        painter.setFont(font)
        x = text_rect.left()
        y = text_rect.bottom() + 2
        for text, colour in self.badges(index):
            width = painter.fontMetrics().horizontalAdvance(text) + 10
            badge = QRect(x, y, width, 15)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(colour))
            painter.drawRoundedRect(badge, 4, 4)
            painter.setPen(QColor("white"))
            painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, text)
            x += width + 4
        painter.restore()
