"""The curator's frames folder: discovered off the GUI thread (engine.dataset.discovery), listed in a Qt
model with lazily loaded thumbnails, filtered by polyp / split, and where a drawn mask is saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import (
    QModelIndex,
    QObject,
    QSize,
    QSortFilterProxyModel,
    Qt,
    Signal,
)

from desktop.imaging import frame_labels, frame_thumbnail
from desktop.viewmodels.thumbnail_list import ThumbnailListModel
from desktop.workers.tasks import TaskRunner
from desktop.workers.thumbnails import ThumbnailLoader
from engine.dataset.discovery import SourceFrame, SourceSet, discover
from engine.dataset.image_reader import read_frame, read_mask
from engine.errors import InputError
from engine.masks.instances import Instance

THUMB_SIZE = QSize(160, 128)
ITEM_ROLE = Qt.ItemDataRole.UserRole + 1
THUMB_ROLE = Qt.ItemDataRole.UserRole + 2
ERROR_ROLE = Qt.ItemDataRole.UserRole + 3


@dataclass
class FrameItem:
    frame: SourceFrame

    @property
    def key(self) -> str:
        return self.frame.rel

    @property
    def has_polyp(self) -> bool:
        """A mask file, labelled instances or a non-empty YOLO file (masks are not opened for this)."""
        frame = self.frame
        if frame.mask_path is not None or frame.label_instances:
            return True
        try:
            return frame.yolo_path is not None and frame.yolo_path.stat().st_size > 0
        except OSError:
            return False


@dataclass
class OpenedFrame:
    """A frame read for the editor, with what of its mask and labels could be read: a mask or label file
    that cannot be read is a problem to show, not a reason to refuse the frame."""

    frame: np.ndarray  # RGB uint8 (H, W, 3)
    mask: np.ndarray | None = None
    labels: list[Instance] = field(default_factory=list)
    mask_problem: InputError | None = None
    labels_problem: InputError | None = None


def read_for_editing(frame: SourceFrame) -> OpenedFrame:
    """The frame's pixels, its mask and its labels; InputError (naming the file) if the frame cannot be read."""
    opened = OpenedFrame(read_frame(frame.path))
    if frame.mask_path is not None:
        try:
            opened.mask = read_mask(frame.mask_path)
        except InputError as exc:
            opened.mask_problem = exc
    height, width = opened.frame.shape[:2]
    try:
        opened.labels = frame_labels(frame.label_instances, frame.yolo_path, width, height)
    except InputError as exc:
        opened.labels_problem = exc
    return opened


def mask_target(sources: SourceSet, frame: SourceFrame) -> Path:
    """Where a drawn mask goes so that the batch job pairs it with its frame: the frame's paired mask (as
    PNG) if it has one in the masks folder; else masks/<stem>.png for a Kvasir layout (images/ + masks/),
    else <input>/masks/<relative path>.png."""
    masks_dir = sources.masks_dir or sources.input_dir / "masks"
    if frame.mask_path is not None and frame.mask_path.is_relative_to(masks_dir):
        return frame.mask_path.with_suffix(".png")
    if sources.frames_dir != sources.input_dir:
        return masks_dir / f"{Path(frame.rel).stem}.png"
    return masks_dir / Path(frame.rel).with_suffix(".png")


class FrameListModel(ThumbnailListModel):
    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return Path(item.frame.rel).name
        if role == Qt.ItemDataRole.ToolTipRole:
            error = self.loader.error(item.key)
            lines = [item.frame.rel, f"split: {item.frame.split}",
                     f"mask: {item.frame.mask_path.name}" if item.frame.mask_path else "no mask"]
            if item.frame.label_source:
                lines.append(f"labels: {item.frame.label_source}")
            return "\n".join(lines + ([f"cannot be read: {error}"] if error else []))
        if role == ITEM_ROLE:
            return item
        if role == THUMB_ROLE:
            frame = item.frame
            return self.loader.get(item.key, lambda: frame_thumbnail(
                frame.path, THUMB_SIZE, frame.mask_path, frame.label_instances, frame.yolo_path))
        if role == ERROR_ROLE:
            return self.loader.error(item.key)
        return None

    def refresh(self, key: str) -> None:
        self.loader.invalidate(key)
        self._thumbnail_ready(key)

    def _thumbnail_ready(self, key: str) -> None:
        row = self._rows.get(key)
        if row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index, [THUMB_ROLE, Qt.ItemDataRole.ToolTipRole])


class FrameFilter(QSortFilterProxyModel):
    """has-polyp / no-polyp and split filters over the frame list."""

    POLYP_CHOICES = ("all", "with", "without")

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.polyp = "all"
        self.split = ""

    def set_filters(self, polyp: str | None = None, split: str | None = None) -> None:
        modern = hasattr(self, "beginFilterChange")  # Qt ≥ 6.10; invalidateFilter() before that
        if modern:
            self.beginFilterChange()
        if polyp is not None:
            self.polyp = polyp
        if split is not None:
            self.split = split
        if modern:
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent: QModelIndex) -> bool:
        item: FrameItem = self.sourceModel().items[row]
        if self.split and item.frame.split != self.split:
            return False
        if self.polyp == "with":
            return item.has_polyp
        if self.polyp == "without":
            return not item.has_polyp
        return True


class DatasetController(QObject):
    """Opens a frames folder (off the GUI thread) and owns what is known about it."""

    loaded = Signal(object)  # SourceSet
    failed = Signal(object)  # the exception (InputError names the folder)
    maskSaved = Signal(str, str)  # frame key, mask path

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.loader = ThumbnailLoader(self)
        self.model = FrameListModel(self.loader, self)
        self.proxy = FrameFilter(self)
        self.proxy.setSourceModel(self.model)
        self.sources: SourceSet | None = None
        self._tasks = TaskRunner(self, threads=1)
        self.loading = False

    def open(self, folder: str | Path) -> None:
        folder = Path(folder).expanduser()
        self.loading = True

        def work():
            sources = discover(folder)
            if not sources.frames:
                raise InputError(f"{sources.frames_dir}: no frames found (jpg, jpeg, png, bmp, tif, tiff)")
            return sources

        self._tasks.submit(work, self._on_loaded, self._on_failed)

    def _on_loaded(self, sources: SourceSet) -> None:
        self.loading = False
        self.sources = sources
        self.model.set_items([FrameItem(frame) for frame in sources.frames])
        self.loaded.emit(sources)

    def _on_failed(self, exc: BaseException) -> None:
        self.loading = False
        self.failed.emit(exc)

    @property
    def input_dir(self) -> Path | None:
        return self.sources.input_dir if self.sources else None

    @property
    def masks_dir(self) -> Path | None:
        """The masks folder the job should read (None when the folder has none and nothing was drawn)."""
        if self.sources is None:
            return None
        folder = self.sources.masks_dir or self.sources.input_dir / "masks"
        return folder if folder.is_dir() else None

    def counts(self) -> dict[str, int]:
        items = self.model.items
        polyps = sum(1 for item in items if item.has_polyp)
        return {"frames": len(items), "with": polyps, "without": len(items) - polyps}

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until discovering a folder ended (closing the window)."""
        return self._tasks.wait(msecs)

    def read_for_editing(self, item: FrameItem) -> OpenedFrame:
        """The item's frame, mask and labels for the editor (read_for_editing)."""
        return read_for_editing(item.frame)

    def mask_target(self, item: FrameItem) -> Path:
        return mask_target(self.sources, item.frame)

    def mask_saved(self, item: FrameItem, path: Path) -> None:
        if self.sources is not None and self.sources.masks_dir is None:
            self.sources.masks_dir = self.sources.input_dir / "masks"
        item.frame.mask_path = path
        self.model.refresh(item.key)
        self.maskSaved.emit(item.key, str(path))
