"""The frame browser: a lazily loaded thumbnail grid of the opened folder (masks outlined in green,
labels in yellow), with has-polyp / no-polyp and split filters. Double-click or Enter opens the editor."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.viewmodels.dataset import (
    ERROR_ROLE,
    ITEM_ROLE,
    THUMB_ROLE,
    THUMB_SIZE,
    DatasetController,
    FrameItem,
)
from desktop.views.thumbs import BADGE_COLOURS, ThumbnailDelegate
from desktop.views.widgets import ElidedLabel

POLYP_FILTERS = (("All frames", "all"), ("With polyp (mask or labels)", "with"), ("Without polyp", "without"))
SPLIT_FILTERS = (("All splits", ""), ("train", "train"), ("val", "val"), ("test", "test"))


class FrameDelegate(ThumbnailDelegate):
    def badges(self, index):
        item: FrameItem = index.data(ITEM_ROLE)
        badges = [(item.frame.split, BADGE_COLOURS[item.frame.split])]
        if item.frame.mask_path is not None:
            badges.append(("mask", BADGE_COLOURS["polyp"]))
        elif item.has_polyp:
            badges.append(("labels", BADGE_COLOURS["polyp"]))
        return badges


class FrameBrowser(QWidget):
    openRequested = Signal(object)  # FrameItem
    openFolderRequested = Signal()

    def __init__(self, dataset: DatasetController, parent: QWidget | None = None):
        super().__init__(parent)
        self.dataset = dataset
        self.polyp_filter = QComboBox()
        for text, value in POLYP_FILTERS:
            self.polyp_filter.addItem(text, value)
        self.split_filter = QComboBox()
        for text, value in SPLIT_FILTERS:
            self.split_filter.addItem(text, value)
        self.count_label = QLabel()
        self.folder_label = ElidedLabel()
        self.folder_label.setAlignment(Qt.AlignmentFlag.AlignRight)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show:"))
        bar.addWidget(self.polyp_filter)
        bar.addWidget(self.split_filter)
        bar.addSpacing(12)
        bar.addWidget(self.count_label)
        bar.addWidget(self.folder_label, 1)

        self.view = QListView()
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setUniformItemSizes(True)
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setBatchSize(256)
        self.view.setSpacing(4)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.view.setItemDelegate(FrameDelegate(THUMB_SIZE, THUMB_ROLE, ERROR_ROLE, self.view))
        self.view.setModel(dataset.proxy)
        self.view.activated.connect(self._activated)
        self.view.doubleClicked.connect(self._activated)

        empty = QWidget()
        empty_layout = QVBoxLayout(empty)
        hint = QLabel("Open a folder of colonoscopy frames to start.\n\nFrames (jpg, png, bmp, tif) in any "
                      "nested folders; a Kvasir-SEG layout (images/ + masks/) or an Ultralytics layout "
                      "(images/ + labels/) is recognised by itself.")
        hint.setWordWrap(True)
        hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        button = QPushButton("Open frames folder…")
        button.clicked.connect(self.openFolderRequested)
        empty_layout.addStretch(1)
        empty_layout.addWidget(hint)
        empty_layout.addWidget(button, 0, Qt.AlignmentFlag.AlignHCenter)
        empty_layout.addStretch(1)
        self.stack = QStackedWidget()
        self.stack.addWidget(empty)
        self.stack.addWidget(self.view)

        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)

        self.polyp_filter.currentIndexChanged.connect(self._filters_changed)
        self.split_filter.currentIndexChanged.connect(self._filters_changed)
        dataset.loaded.connect(self._loaded)
        dataset.maskSaved.connect(lambda *_: self._filters_changed())  # a frame may leave "without polyp"
        self._update_count()

    def _filters_changed(self) -> None:
        self.dataset.proxy.set_filters(self.polyp_filter.currentData(), self.split_filter.currentData())
        self._update_count()

    def _loaded(self, sources) -> None:
        self.stack.setCurrentIndex(1)
        self.folder_label.setText(str(sources.input_dir))
        self.folder_label.setToolTip("\n".join(sources.notes))
        self._update_count()

    def _update_count(self) -> None:
        if self.dataset.sources is None:
            self.count_label.setText("")
            self.stack.setCurrentIndex(0)
            return
        counts = self.dataset.counts()
        shown = self.dataset.proxy.rowCount()
        self.count_label.setText(f"{shown} of {counts['frames']} frames · {counts['with']} with polyp, "
                                 f"{counts['without']} without")

    def _activated(self, index: QModelIndex) -> None:
        item = index.data(ITEM_ROLE)
        if item is not None:
            self.openRequested.emit(item)

    def visible_items(self) -> list[FrameItem]:
        proxy = self.dataset.proxy
        return [proxy.index(row, 0).data(ITEM_ROLE) for row in range(proxy.rowCount())]
