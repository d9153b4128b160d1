"""Progress events a job emits: the CLI draws a progress bar from them, the desktop app turns them into
Qt signals. Plain data, no callbacks into the UI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobEvent:
    kind: str  # started | frame | step | variant | skipped | failed | finished
    done: int = 0  # variants finished (ok, failed or skipped) so far
    total: int = 0  # variants planned
    frame: str = ""  # the frame's path relative to the input's frames folder
    variant: int = -1
    step: int = 0
    steps: int = 0
    seconds: float = 0.0
    message: str = ""
    path: str = ""  # the written image, for "variant"
    worker: str = ""  # Ray backend: the worker that runs the frame, "host:pid"
