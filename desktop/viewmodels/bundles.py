"""The model bundles the curator can pick: those in the bundles folder (engine.bundle.format.bundles_folder)
plus folders added by hand, each verified off the GUI thread (read_bundle checks every file's sha256) and
shown with kind, size, the provider it will run on and its integrity state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt, Signal
from PySide6.QtGui import QBrush, QColor

from desktop.workers.tasks import TaskRunner
from engine.bundle.format import MANIFEST_NAME, bundles_folder, read_bundle
from engine.jobs.spec import DEFAULT_MODEL

INPAINT_KIND = "sd-inpaint"
GENERATION_KINDS = (INPAINT_KIND, "pixel-inpaint", "pixel-controlnet", "sd-controlnet")  # bundles a job can generate with

COLUMNS = ("Bundle", "Kind", "Size", "Runs on", "Integrity")
PATH_ROLE = Qt.ItemDataRole.UserRole + 1


@dataclass
class BundleRow:
    path: Path
    name: str
    kind: str = ""
    size_bytes: int = 0
    precision: str = ""
    state: str = "checking"  # checking | ok | broken
    problem: str = ""  # the BundleError's message (names the file)
    provider: str = ""  # expected provider
    provider_confirmed: bool = False
    description: str = ""

    @property
    def usable(self) -> bool:
        return self.state == "ok"


def human_size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def expected_provider(requested: str, precision: str) -> str:
    """The provider onnxruntime will try first for this request (confirmed only once a job ran)."""
    try:
        from engine.runtime.providers import plan_providers

        return plan_providers(requested, fp16=precision == "fp16").first_choice()
    except Exception:  # noqa: BLE001 - onnxruntime missing or odd: the job's own message will say more
        return "?"


def inspect_bundle(path: Path, provider: str) -> BundleRow:
    """Verify one bundle (worker thread); a broken one is a row with the problem, never an exception."""
    row = BundleRow(path=path, name=path.name)
    try:
        bundle = read_bundle(path)
        info = bundle.describe()
    except Exception as exc:  # noqa: BLE001 - BundleError names the file; anything else is shown as is
        row.state, row.problem = "broken", str(exc)
        return row
    if info["kind"] not in GENERATION_KINDS:
        row.state, row.kind = "broken", info["kind"]
        row.problem = f"{path / MANIFEST_NAME}: kind {info['kind']!r} is not a generation bundle ({', '.join(GENERATION_KINDS)})"
        return row
    row.name, row.kind, row.size_bytes = info["name"], info["kind"], info["size_bytes"]
    row.precision, row.description, row.state = info["precision"], info.get("description", ""), "ok"
    row.path = Path(info["path"])
    row.provider = expected_provider(provider, row.precision)
    return row


def _manifest_kind(folder: Path) -> str | None:
    try:
        import json

        return json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8")).get("kind")
    except Exception:  # noqa: BLE001 - unreadable: listed, and verification says what is wrong
        return None


def bundle_folders(extra: list[str]) -> list[Path]:
    """Inpainting bundles of the bundles folder (other kinds, e.g. feature extractors, are not listed), then
    the folders the curator added; the default (demo) bundle first."""
    found = []
    root = bundles_folder()
    if root.is_dir():
        found = sorted((p.parent for p in root.glob(f"*/{MANIFEST_NAME}") if _manifest_kind(p.parent) in (*GENERATION_KINDS, None)),
                       key=lambda p: (p.resolve() != DEFAULT_MODEL.resolve(), p.name))
    for text in extra:
        path = Path(text)
        if path not in found:
            found.append(path)
    return found


class BundleListModel(QAbstractTableModel):
    scanned = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.rows: list[BundleRow] = []
        self._tasks = TaskRunner(self, threads=1)
        self.provider = "auto"
        self._pending = 0

    # ------------------------------------------------------------------ scanning
    def scan(self, extra: list[str], provider: str = "auto") -> None:
        """List and verify the bundles (verification runs on a worker thread)."""
        self.provider = provider
        self.beginResetModel()
        self.rows = [BundleRow(path=p, name=p.name) for p in bundle_folders(extra)]
        self.endResetModel()
        self._pending = len(self.rows)
        if not self.rows:
            self.scanned.emit()
        for row in list(self.rows):
            self._verify(row)

    def add(self, path: Path) -> BundleRow:
        path = Path(path)
        for row in self.rows:
            if row.path == path or row.path == path.resolve():
                return row
        self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows))
        row = BundleRow(path=path, name=path.name)
        self.rows.append(row)
        self.endInsertRows()
        self._pending += 1
        self._verify(row)
        return row

    def _verify(self, row: BundleRow) -> None:
        original = row.path
        self._tasks.submit(lambda: inspect_bundle(original, self.provider),
                           lambda result: self._verified(row, result), lambda exc: None)

    def _verified(self, row: BundleRow, result: BundleRow) -> None:
        if row not in self.rows:
            return
        index = self.rows.index(row)
        row.__dict__.update(result.__dict__)
        self.dataChanged.emit(self.index(index, 0), self.index(index, len(COLUMNS) - 1))
        self._pending -= 1
        if self._pending <= 0:
            self.scanned.emit()

    def busy(self) -> bool:
        return self._pending > 0

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until the bundle verifications ended (closing the window)."""
        return self._tasks.wait(msecs)

    def row_for(self, path: str | Path) -> int:
        for index, row in enumerate(self.rows):
            if str(row.path) == str(path) or str(row.path) == str(Path(path).expanduser().resolve()):
                return index
        return -1

    def confirm_provider(self, path: Path, provider: str) -> None:
        index = self.row_for(path)
        if index >= 0 and provider:
            self.rows[index].provider, self.rows[index].provider_confirmed = provider, True
            self.dataChanged.emit(self.index(index, 3), self.index(index, 3))

    # ------------------------------------------------------------------ Qt model
    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, column = self.rows[index.row()], index.column()
        if role == PATH_ROLE:
            return str(row.path)
        if role == Qt.ItemDataRole.ToolTipRole:
            text = f"{row.path}"
            if row.problem:
                text += f"\n{row.problem}"
            elif row.description:
                text += f"\n{row.kind}, {row.precision}: {row.description}"
            if column == 3 and row.provider:
                text += "\nconfirmed by the last job" if row.provider_confirmed else \
                    "\nexpected: confirmed when a job runs (a GPU whose libraries do not load falls back to CPU)"
            return text
        if role == Qt.ItemDataRole.ForegroundRole and column == 4:
            return QBrush(QColor("#2e7d32" if row.state == "ok" else "#c62828" if row.state == "broken" else "#777"))
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if column == 0:
            return row.name
        if column == 1:
            return row.kind or "—"
        if column == 2:
            return human_size(row.size_bytes) if row.size_bytes else "—"
        if column == 3:
            if not row.provider:
                return "—"
            return row.provider.upper() + ("" if row.provider_confirmed else " (expected)")
        return {"ok": "verified", "broken": "broken", "checking": "checking…"}[row.state]
