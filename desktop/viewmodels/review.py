"""Reviewing a job's results: its manifest records (engine.jobs.review.load_records) as a list of variants
with thumbnails, each accepted or rejected through engine.jobs.review.set_review — run one at a time, in
order, off the GUI thread — so the dataset on disk (images, labels, COCO) always matches what was accepted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QModelIndex, QObject, QSize, Qt, Signal

from desktop.imaging import variant_picture
from desktop.workers.tasks import TaskRunner
from desktop.viewmodels.thumbnail_list import ThumbnailListModel
from desktop.workers.thumbnails import ThumbnailLoader
from engine.errors import InputError
from engine.jobs.review import REJECTED_DIR, job_formats_and_sources, load_records, set_review

THUMB_SIZE = QSize(150, 120)
ITEM_ROLE = Qt.ItemDataRole.UserRole + 1
THUMB_ROLE = Qt.ItemDataRole.UserRole + 2
STATUS_ROLE = Qt.ItemDataRole.UserRole + 3
REVIEWABLE = ("ok", "rejected")
SORT_ORDERS = ("job order", "judge score, lowest first", "judge score, highest first")


@dataclass
class ReviewItem:
    record: dict
    output: Path
    source_path: Path | None
    pending: bool = False  # a set_review for it is queued or running

    @property
    def key(self) -> str:
        return self.record["key"]

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def image_path(self) -> Path:
        relative = self.record["image"]
        if self.status == "rejected":
            return self.output / REJECTED_DIR / relative
        return self.output / relative

    @property
    def title(self) -> str:
        return Path(self.record["image"]).name

    @property
    def judge_score(self) -> float | None:
        """The polyp judge's agreement with the variant (batch job --judge), None when it was not judged."""
        score = (self.record.get("judge") or {}).get("score")
        return None if score is None else float(score)


def source_paths(output: Path) -> dict[str, Path]:
    """{source frame (relative) → its path} from the job's record; {} when the input has moved."""
    try:
        return job_formats_and_sources(output)[1]
    except InputError:
        return {}


class ReviewModel(ThumbnailListModel):
    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.title
        if role == Qt.ItemDataRole.ToolTipRole:
            r = item.record
            judged = "" if item.judge_score is None else f"\njudge score {item.judge_score:.2f}"
            if r.get("reason") == "judge":
                judged += " (rejected by the judge)"
            elif r.get("reason") == "dark fill":
                judged += "\nrejected: the fill is darker than the mucosa around it"
            return (f"{r['image']}\nfrom {r['source_frame']}, {r['mode']} / {r['mask_source']}, seed {r['seed']}\n"
                    f"status: {'updating…' if item.pending else item.status}{judged}")
        if role == ITEM_ROLE:
            return item
        if role == STATUS_ROLE:
            return "pending" if item.pending else item.status
        if role == THUMB_ROLE:
            path, record = item.image_path, item.record
            return self.loader.get(f"{item.key}|{item.status}", lambda: variant_picture(path, record, THUMB_SIZE, False))
        return None

    def changed(self, key: str) -> None:
        row = self._rows.get(key)
        if row is not None:
            self.dataChanged.emit(self.index(row), self.index(row))

    def _thumbnail_ready(self, tagged: str) -> None:
        self.changed(tagged.rsplit("|", 1)[0])


class ReviewController(QObject):
    loaded = Signal()
    applied = Signal(list)  # keys whose new status is on disk
    failed = Signal(object)  # exception from set_review (e.g. the output folder went away)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.loader = ThumbnailLoader(self, capacity=400)
        self.model = ReviewModel(self.loader, self)
        self.output: Path | None = None
        self.records: list[dict] = []
        self._tasks = TaskRunner(self, serial=True)

    def load(self, output: str | Path) -> None:
        """Read the manifest of a job's output folder; InputError if it is not one."""
        output = Path(output).expanduser()
        if not (output / "manifest.jsonl").is_file():
            raise InputError(f"{output / 'manifest.jsonl'}: not found: this is not the output folder of a job")
        self.output = output
        self.records = load_records(output)
        paths = source_paths(output)
        items = [ReviewItem(r, output, paths.get(r.get("source_frame", ""))) for r in self.records
                 if r.get("status") in REVIEWABLE]
        self.model.set_items(items)
        self.loaded.emit()

    def sort(self, order: str) -> None:
        """Reorder the gallery: job order, or by judge score (unjudged variants last either way)."""
        if order not in SORT_ORDERS:
            raise ValueError(f"unknown order {order!r}")
        items = sorted(self.model.items, key=lambda item: self._position[item.key])
        if order != SORT_ORDERS[0]:
            sign = 1.0 if order == SORT_ORDERS[1] else -1.0
            items.sort(key=lambda item: (item.judge_score is None, sign * (item.judge_score or 0.0)))
        self.model.set_items(items)

    @property
    def _position(self) -> dict[str, int]:
        return {record["key"]: index for index, record in enumerate(self.records)}

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("ok", "rejected", "failed", "skipped"), 0)
        for record in self.records:
            counts[record.get("status", "failed")] = counts.get(record.get("status", "failed"), 0) + 1
        return counts

    def busy(self) -> bool:
        return self._tasks.busy()

    def wait(self, msecs: int = 30_000) -> bool:
        return self._tasks.wait(msecs)

    def set_status(self, keys: list[str], accepted: bool) -> None:
        """Accept or reject variants; the files move and COCO/YOLO are rebuilt on a worker thread."""
        items = [self.model.items[self.model.row_of(k)] for k in keys if self.model.row_of(k) >= 0]
        wanted = "ok" if accepted else "rejected"
        keys = [item.key for item in items if item.status != wanted or item.pending]
        if not keys or self.output is None:
            return
        for item in items:
            item.pending = True
            self.model.changed(item.key)
        output = self.output
        self._tasks.submit(lambda: set_review(output, keys, accepted),
                           lambda records: self._applied(keys, records), lambda exc: self._failed(keys, exc))

    def accept(self, key: str) -> None:
        self.set_status([key], True)

    def reject(self, key: str) -> None:
        self.set_status([key], False)

    def _applied(self, keys: list[str], records: list[dict]) -> None:
        self.records = records
        by_key = {r["key"]: r for r in records}
        for key in keys:
            row = self.model.row_of(key)
            if row >= 0:
                item = self.model.items[row]
                item.record = by_key.get(key, item.record)
                item.pending = False
                self.model.changed(key)
        self.applied.emit(keys)

    def _failed(self, keys: list[str], exc: BaseException) -> None:
        for key in keys:
            row = self.model.row_of(key)
            if row >= 0:
                self.model.items[row].pending = False
                self.model.changed(key)
        self.failed.emit(exc)
