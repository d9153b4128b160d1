"""The review gallery: every generated variant in a strip, and the selected one large — its source frame
and the result side by side, the inpainted region outlined on both. Accept (A) / reject (R), previous and
next with the arrow keys; each decision is applied on disk (files moved, COCO and YOLO rebuilt)."""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from desktop.imaging import CARRIED_COLOUR, REGION_COLOUR, variant_picture
from desktop.viewmodels.review import (
    ITEM_ROLE,
    SORT_ORDERS,
    STATUS_ROLE,
    THUMB_ROLE,
    THUMB_SIZE,
    ReviewController,
    ReviewItem,
)
from desktop.views.thumbs import BADGE_COLOURS, ThumbnailDelegate

STATUS_TEXT = {"ok": "accepted", "rejected": "rejected", "pending": "updating…"}
JUDGE_COLOUR = "#5e35b1"


class VariantDelegate(ThumbnailDelegate):
    def badges(self, index):
        status = index.data(STATUS_ROLE)
        badges = [(STATUS_TEXT[status], BADGE_COLOURS[status])]
        item = index.data(ITEM_ROLE)
        if item is not None and item.judge_score is not None:
            badges.append((f"judge {item.judge_score:.2f}", JUDGE_COLOUR))
        return badges

    def border(self, index):
        return QColor(BADGE_COLOURS["rejected"]) if index.data(STATUS_ROLE) == "rejected" else None


class ComparisonView(QWidget):
    """Source | result, each fitted to half the widget, titled; a rejected result is marked."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.source: QImage | None = None
        self.result: QImage | None = None
        self.source_title = "source frame"
        self.result_title = "result"
        self.rejected = False
        self.message = "Select a result on the left."
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(400, 220)

    def show_pair(self, source: QImage | None, result: QImage | None, source_title: str, result_title: str,
                  rejected: bool, message: str = "") -> None:
        self.source, self.result, self.rejected, self.message = source, result, rejected, message
        self.source_title, self.result_title = source_title, result_title
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#1e1e1e"))
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        if self.result is None:
            painter.setPen(QColor("#9e9e9e"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)
            return
        gap, title_height = 10, 22
        half = (self.width() - 3 * gap) / 2
        for column, (image, title) in enumerate(((self.source, self.source_title), (self.result, self.result_title))):
            left = gap + column * (half + gap)
            area = QRectF(left, title_height + 4, half, self.height() - title_height - 12)
            painter.setPen(QColor("#e0e0e0"))
            painter.drawText(QRectF(left, 2, half, title_height), Qt.AlignmentFlag.AlignCenter, title)
            if image is None or image.isNull():
                painter.setPen(QColor("#ff8a80"))
                painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "source frame not found" if column == 0 else
                                 "result not found")
                continue
            size = image.size().scaled(area.size().toSize(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRectF(0, 0, size.width(), size.height())
            target.moveCenter(area.center())
            painter.drawImage(target, image)
            if column == 1 and self.rejected:
                painter.fillRect(target, QColor(198, 40, 40, 70))
                font = painter.font()
                font.setPointSizeF(font.pointSizeF() * 2.2)
                font.setBold(True)
                painter.setFont(font)
                painter.setPen(QColor("white"))
                painter.drawText(target, Qt.AlignmentFlag.AlignCenter, "REJECTED")
                painter.setFont(self.font())


class ReviewPage(QWidget):
    openOutputRequested = Signal()

    def __init__(self, review: ReviewController, parent: QWidget | None = None):
        super().__init__(parent)
        self.review = review
        self.summary = QLabel("No results to review yet: run a job, or open a job's output folder.")
        self.summary.setWordWrap(True)
        self.legend = QLabel(
            f"<span style='color:{QColor(*REGION_COLOUR).name()}'>■</span> inpainted region &nbsp; "
            f"<span style='color:{QColor(*CARRIED_COLOUR).name()}'>■</span> labels carried from the frame")
        self.accept_button = QPushButton("Accept (A)")
        self.reject_button = QPushButton("Reject (R)")
        self.prev_button = QPushButton("◀ Previous (←)")
        self.next_button = QPushButton("Next (→)")
        self.open_button = QPushButton("Open output folder")
        self.accept_button.clicked.connect(lambda: self.decide(True))
        self.reject_button.clicked.connect(lambda: self.decide(False))
        self.prev_button.clicked.connect(lambda: self.move(-1))
        self.next_button.clicked.connect(lambda: self.move(1))
        self.open_button.clicked.connect(self.openOutputRequested)
        self.sort_box = QComboBox()
        self.sort_box.addItems([f"Sort: {order}" for order in SORT_ORDERS])
        self.sort_box.setToolTip("Order of the results: as the job made them, or by the polyp judge's score "
                                 "(batch job --judge)")
        self.sort_box.currentIndexChanged.connect(self._sort_changed)

        self.list = QListView()
        self.list.setModel(review.model)
        self.list.setItemDelegate(VariantDelegate(THUMB_SIZE, THUMB_ROLE, None, self.list))
        self.list.setUniformItemSizes(True)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.setFixedWidth(THUMB_SIZE.width() + 36)
        self.list.selectionModel().currentChanged.connect(lambda *_: self._show_current())
        self.comparison = ComparisonView()
        self.info = QLabel(" ")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        buttons = QHBoxLayout()
        for button in (self.prev_button, self.next_button, self.accept_button, self.reject_button):
            buttons.addWidget(button)
        buttons.addWidget(self.sort_box)
        buttons.addStretch(1)
        buttons.addWidget(self.legend)
        buttons.addWidget(self.open_button)
        right = QVBoxLayout()
        right.addWidget(self.comparison, 1)
        right.addWidget(self.info)
        body = QHBoxLayout()
        body.addWidget(self.list)
        body.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)
        layout.addLayout(body, 1)

        for key, slot in ((Qt.Key.Key_A, lambda: self.decide(True)), (Qt.Key.Key_R, lambda: self.decide(False)),
                          (Qt.Key.Key_Left, lambda: self.move(-1)), (Qt.Key.Key_Right, lambda: self.move(1))):
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        review.loaded.connect(self._loaded)
        review.applied.connect(self._applied)
        review.model.dataChanged.connect(lambda *_: self._update_summary())
        self._update_buttons()

    # ------------------------------------------------------------------ actions
    def current(self) -> ReviewItem | None:
        index = self.list.currentIndex()
        return index.data(ITEM_ROLE) if index.isValid() else None

    def select_row(self, row: int) -> None:
        index = self.review.model.index(row)
        if index.isValid():
            self.list.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.ClearAndSelect)
            self.list.scrollTo(index)

    def move(self, delta: int) -> None:
        count = self.review.model.rowCount()
        if count:
            row = self.list.currentIndex().row() if self.list.currentIndex().isValid() else -delta
            self.select_row(max(0, min(count - 1, row + delta)))

    def decide(self, accepted: bool) -> None:
        """Accept or reject the selected variant, then go to the next one."""
        item = self.current()
        if item is None:
            return
        self.review.set_status([item.key], accepted)
        self._show_current()
        if self.list.currentIndex().row() < self.review.model.rowCount() - 1:
            self.move(1)

    def _sort_changed(self, index: int) -> None:
        current = self.current()
        self.review.sort(SORT_ORDERS[index])
        row = self.review.model.row_of(current.key) if current is not None else 0
        self.select_row(max(row, 0))

    # ------------------------------------------------------------------ updates
    def _loaded(self) -> None:
        if self.sort_box.currentIndex():
            self.review.sort(SORT_ORDERS[self.sort_box.currentIndex()])
        self._update_summary()
        if self.review.model.rowCount():
            self.select_row(0)
        else:
            self.comparison.show_pair(None, None, "", "", False, "This job wrote no results to review.")
        self._update_buttons()

    def _applied(self, keys: list[str]) -> None:
        current = self.current()
        if current is not None and current.key in keys:
            self._show_current()
        self._update_summary()

    def _update_summary(self) -> None:
        if self.review.output is None:
            return
        counts = self.review.counts()
        self.summary.setText(
            f"<b>{self.review.output}</b> — {counts['ok']} accepted, {counts['rejected']} rejected"
            f" · {counts['failed']} failed, {counts['skipped']} skipped (not reviewable). "
            "Rejected results leave the images, labels and COCO file; the manifest keeps them as rejected.")

    def _update_buttons(self) -> None:
        has = self.current() is not None
        for button in (self.accept_button, self.reject_button, self.prev_button, self.next_button):
            button.setEnabled(has)
        self.open_button.setEnabled(self.review.output is not None)

    def _show_current(self) -> None:
        self._update_buttons()
        item = self.current()
        if item is None:
            return
        size = QSize(1024, 1024)
        record = item.record
        try:
            result = variant_picture(item.image_path, record, size)
        except Exception:  # noqa: BLE001 - shown as "result not found" in the view
            result = QImage()
        source = QImage()
        if item.source_path is not None:
            try:
                source = variant_picture(item.source_path, record, size, carried=False)
            except Exception:  # noqa: BLE001
                source = QImage()
        status = "updating…" if item.pending else STATUS_TEXT[item.status]
        self.comparison.show_pair(source, result, f"source: {record['source_frame']}",
                                  f"result ({status}): {item.title}", item.status == "rejected")
        self.info.setText(
            f"{record['mode']} · mask source {record['mask_source']} · seed {record['seed']} · "
            f"{record.get('steps', '?')} steps {record.get('scheduler', '')} · guidance {record.get('guidance', '?')} · "
            f"bundle {record.get('bundle', '?')} · {len(record.get('instances', []))} label(s)"
            + _judge_text(record) + _mucosa_text(record))


def _judge_text(record: dict) -> str:
    judge = record.get("judge")
    if not judge:
        return ""
    text = f" · judge score {judge['score']:.2f} (minimum {judge.get('min_score', 0.5):g}"
    if len(judge.get("attempts", [])) > 1:
        text += f", attempt {len(judge['attempts'])} of at most {judge.get('max_attempts', '?')}"
    text += ")"
    if record.get("reason") == "judge":
        text += " — rejected by the judge"
    return text


def _mucosa_text(record: dict) -> str:
    check = record.get("mucosa_check")
    if not check or check.get("darkness") is None:
        return ""
    text = f" · fill {check['darkness']:+.0f} luma levels against its mucosa"
    if len(check.get("attempts", [])) > 1:
        text += f" (painting {len(check['attempts'])})"
    if record.get("reason") == "dark fill":
        text += " — rejected: darker than the mucosa around it"
    return text
