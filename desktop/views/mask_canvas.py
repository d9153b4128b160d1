"""The editor's canvas: the frame fitted to the widget with its mask (green fill), its labels (yellow
outlines) and the retrieval proposals (orange boxes); mouse and keys become MaskEditor calls in frame
pixels (brush, eraser, rectangle, polygon)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QSizePolicy, QWidget

from desktop.imaging import LABEL_COLOUR, MASK_COLOUR, mask_overlay, to_qimage
from desktop.viewmodels.mask_editor import MaskEditor

PROPOSAL_COLOUR = QColor(255, 140, 0)
CLOSE_DISTANCE_PX = 10  # a polygon click this close (screen pixels) to its first point closes it


class MaskCanvas(QWidget):
    """Paints the frame fitted to the widget and turns mouse input into MaskEditor calls (frame pixels)."""

    def __init__(self, editor: MaskEditor, parent: QWidget | None = None):
        super().__init__(parent)
        self.editor = editor
        self.tool = "brush"
        self.radius = 10
        self.labels = []  # Instances drawn as outlines (the frame's existing labels)
        self.proposals = []  # retrieval proposals (box, score)
        self.selected_proposal = -1
        self._frame_image: QImage | None = None
        self._overlay: QImage | None = None
        self._overlay_version = -1
        self._drag_start: QPointF | None = None
        self._drag_now: QPointF | None = None
        self._polygon: list[QPointF] = []
        self._cursor: QPointF | None = None
        self._drawing = False
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 240)
        editor.loaded.connect(self._frame_loaded)
        editor.changed.connect(self.update)

    # ------------------------------------------------------------------ geometry
    def image_rect(self) -> QRectF:
        if self.editor.frame is None:
            return QRectF()
        height, width = self.editor.frame.shape[:2]
        scale = min(self.width() / width, self.height() / height)
        w, h = width * scale, height * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def scale(self) -> float:
        rect = self.image_rect()
        return rect.width() / self.editor.frame.shape[1] if self.editor.frame is not None else 1.0

    def to_image(self, point: QPointF) -> QPointF:
        rect = self.image_rect()
        return (point - rect.topLeft()) / self.scale()

    def to_widget(self, point: QPointF) -> QPointF:
        return self.image_rect().topLeft() + point * self.scale()

    # ------------------------------------------------------------------ state
    def _frame_loaded(self) -> None:
        self._frame_image = to_qimage(self.editor.frame) if self.editor.frame is not None else None
        self._overlay_version = -1
        self._polygon.clear()
        self._drag_start = self._drag_now = None
        self.update()

    def set_tool(self, tool: str) -> None:
        self.tool = tool
        self._polygon.clear()
        self.update()

    def cancel_shape(self) -> None:
        self._polygon.clear()
        self._drag_start = None
        self.update()

    # ------------------------------------------------------------------ input
    def mousePressEvent(self, event) -> None:
        if not self.editor.active or event.button() != Qt.MouseButton.LeftButton:
            return
        point = self.to_image(event.position())
        self._drawing = True
        if self.tool in ("brush", "eraser"):
            self.editor.begin_stroke(point.x(), point.y(), self.radius, erase=self.tool == "eraser")
        elif self.tool == "rectangle":
            self._drag_start = self._drag_now = point
        elif self.tool == "polygon":
            if len(self._polygon) >= 3:
                first = self.to_widget(self._polygon[0])
                if (first - event.position()).manhattanLength() <= CLOSE_DISTANCE_PX:
                    self.close_polygon()
                    return
            self._polygon.append(point)
        self.update()

    def mouseMoveEvent(self, event) -> None:
        point = self.to_image(event.position())
        self._cursor = event.position()
        if self._drawing and self.tool in ("brush", "eraser"):
            self.editor.stroke_to(point.x(), point.y())
        elif self._drawing and self.tool == "rectangle" and self._drag_start is not None:
            self._drag_now = point
        self.update()

    def mouseReleaseEvent(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or not self._drawing:
            return
        self._drawing = False
        point = self.to_image(event.position())
        if self.tool in ("brush", "eraser"):
            self.editor.stroke_to(point.x(), point.y())
            self.editor.end_stroke()
        elif self.tool == "rectangle" and self._drag_start is not None:
            start, self._drag_start = self._drag_start, None
            self.editor.fill_rect(start.x(), start.y(), point.x(), point.y())
        self.update()

    def mouseDoubleClickEvent(self, event) -> None:
        if self.tool == "polygon":
            self.close_polygon()

    def leaveEvent(self, event) -> None:
        self._cursor = None
        self.update()

    def keyPressEvent(self, event) -> None:
        if self.tool == "polygon" and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.close_polygon()
        elif event.key() == Qt.Key.Key_Escape:
            self.cancel_shape()
        elif self.tool == "polygon" and event.key() == Qt.Key.Key_Backspace and self._polygon:
            self._polygon.pop()
            self.update()
        else:
            super().keyPressEvent(event)

    def close_polygon(self) -> None:
        points = [(p.x(), p.y()) for p in self._polygon]
        self._polygon.clear()
        if len(points) >= 3:
            self.editor.fill_polygon(points)
        self.update()

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#1e1e1e"))
        if self._frame_image is None or not self.editor.active:
            painter.setPen(QColor("#9e9e9e"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                             "Double-click a frame in the Frames tab to open it here.")
            return
        rect = self.image_rect()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.drawImage(rect, self._frame_image)
        if self._overlay_version != self.editor.version:
            self._overlay = mask_overlay(self.editor.mask, MASK_COLOUR, 115)
            self._overlay_version = self.editor.version
        painter.drawImage(rect, self._overlay)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        scale = self.scale()
        painter.setPen(QPen(QColor(*LABEL_COLOUR), 1.5))
        for instance in self.labels:
            for polygon in instance.outline_polygons():
                points = [self.to_widget(QPointF(polygon[i], polygon[i + 1])) for i in range(0, len(polygon), 2)]
                painter.drawPolygon(QPolygonF(points))
        for index, proposal in enumerate(self.proposals):
            x, y, w, h = proposal.box
            selected = index == self.selected_proposal
            pen = QPen(PROPOSAL_COLOUR, 3 if selected else 1.5, Qt.PenStyle.SolidLine if selected else Qt.PenStyle.DashLine)
            painter.setPen(pen)
            box = QRectF(self.to_widget(QPointF(x, y)), self.to_widget(QPointF(x + w, y + h)))
            painter.drawRect(box)
            tag = f"#{index + 1} {proposal.score:.2f}"
            tag_rect = QRectF(box.topLeft() + QPointF(0, 1), QSizeF(painter.fontMetrics().horizontalAdvance(tag) + 8,
                                                                     painter.fontMetrics().height() + 2))
            painter.fillRect(tag_rect, PROPOSAL_COLOUR)
            painter.setPen(QColor("black"))
            painter.drawText(tag_rect, Qt.AlignmentFlag.AlignCenter, tag)
        painter.setPen(QPen(QColor("white"), 1.5, Qt.PenStyle.DashLine))
        if self._drag_start is not None and self._drag_now is not None:
            painter.drawRect(QRectF(self.to_widget(self._drag_start), self.to_widget(self._drag_now)))
        if self._polygon:
            points = [self.to_widget(p) for p in self._polygon]
            if self._cursor is not None:
                points.append(self._cursor)
            painter.drawPolyline(QPolygonF(points))
            painter.setBrush(QColor("white"))
            for point in points[: len(self._polygon)]:
                painter.drawEllipse(point, 3, 3)
        if self._cursor is not None and self.tool in ("brush", "eraser"):
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor("white"), 1))
            painter.drawEllipse(self._cursor, self.radius * scale, self.radius * scale)

