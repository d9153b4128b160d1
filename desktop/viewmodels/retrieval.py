"""Retrieval proposals for the frame being edited, when the retrieval proposer (engine.retrieval) is
installed: open a database folder, propose masks for the current frame off the GUI thread.

If ``import engine.retrieval`` fails, ``available`` is False and ``note`` says so in one line; the view
shows the panel disabled with that note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from desktop.workers.tasks import TaskRunner

NOT_INSTALLED = "retrieval proposer not installed"


def import_retrieval():
    """(the engine.retrieval module or None, a one-line note)."""
    try:
        from engine import retrieval

        retrieval.RetrievalProposer  # noqa: B018 - the API this panel needs
    except Exception as exc:  # noqa: BLE001 - not built yet, or broken: the panel stays disabled
        return None, NOT_INSTALLED, f"{type(exc).__name__}: {exc}"
    return retrieval, "", ""


class RetrievalController(QObject):
    opened = Signal(str)  # database folder
    proposalsChanged = Signal()
    failed = Signal(object)
    busyChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.module, self.note, self.detail = import_retrieval()
        self.proposer = None
        self.db_path: Path | None = None
        self.proposals: list = []
        self.refusals = 0
        self.explain: np.ndarray | None = None  # the retrieval's explain picture for the current frame (RGB)
        self.top_k = 5
        self._tasks = TaskRunner(self, serial=True)
        self._request = 0

    @property
    def available(self) -> bool:
        return self.module is not None

    def spec_values(self) -> dict:
        """The job keys for mask source "retrieved": the open database and the candidates per frame (none
        without a database)."""
        if self.db_path is None:
            return {}
        return {"db": str(self.db_path), "top_k": self.top_k}

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until opening a database and proposing ended (closing the window)."""
        return self._tasks.wait(msecs)

    def open_database(self, folder: str | Path) -> None:
        if not self.available:
            return
        folder = Path(folder)
        self.busyChanged.emit(True)
        module = self.module

        def done(proposer):
            self.proposer, self.db_path, self.proposals = proposer, folder, []
            self.busyChanged.emit(False)
            self.opened.emit(str(folder))
            self.proposalsChanged.emit()

        self._tasks.submit(lambda: module.RetrievalProposer.open(folder), done, self._failed)

    def propose(self, frame: np.ndarray | None) -> None:
        """Proposals for this frame (replacing the previous frame's); nothing without a database."""
        self._request += 1
        self.proposals, self.explain, self.refusals = [], None, 0
        self.proposalsChanged.emit()
        if self.proposer is None or frame is None:
            return
        request, proposer, top_k = self._request, self.proposer, self.top_k
        self.busyChanged.emit(True)

        def work():
            found = proposer.propose(frame, top_k=top_k)
            refusals = list(getattr(proposer, "last_refusals", None) or [])
            return found, refusals, _explain(frame, found, refusals, proposer)

        def done(result):
            self.busyChanged.emit(False)
            if request == self._request:
                self.proposals, refusals, self.explain = result
                self.refusals = len(refusals)
                self.proposalsChanged.emit()

        self._tasks.submit(work, done, self._failed)

    def _failed(self, exc: BaseException) -> None:
        self.busyChanged.emit(False)
        self.failed.emit(exc)

    def describe(self, index: int) -> str:
        proposal = self.proposals[index]
        x, y, w, h = proposal.box
        return f"#{index + 1}  score {proposal.score:.2f}  {w:.0f}×{h:.0f} px at {x:.0f}, {y:.0f}"

    def origin(self, index: int) -> str:
        candidate = getattr(self.proposals[index], "candidate", None)
        source = getattr(candidate, "source", None)
        return f"from the database entry of {source}" if source else ""


def _explain(frame, proposals, refusals, proposer) -> np.ndarray | None:
    """The explain picture (query, best candidate with its mask, matches, proposal), if the installed
    retrieval offers it; None otherwise — the proposals are shown either way."""
    try:
        from engine.retrieval.explain import render_explain

        return render_explain(frame, proposals, refusals, proposer.database, "this frame")
    except Exception:  # noqa: BLE001 - optional extra
        return None
