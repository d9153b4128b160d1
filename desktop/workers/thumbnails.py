"""Thumbnails loaded lazily on worker threads, with an LRU cache.

The views ask only for the items they paint (``get``); a miss queues the request and returns None (the view
paints a placeholder). Requests are served newest first, and only the newest ``MAX_PENDING`` are kept, so
scrolling fast through thousands of frames loads what is on screen now, not what was on screen a second ago.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

MAX_PENDING = 96


class _Relay(QObject):
    loaded = Signal(str, QImage, str)  # key, image (null on error), error message


class _Load(QRunnable):
    def __init__(self, key: str, render: Callable[[], QImage], relay: _Relay):
        super().__init__()
        self.setAutoDelete(True)
        self.key, self.render, self.relay = key, render, relay

    def run(self) -> None:
        try:
            image, error = self.render(), ""
        except Exception as exc:  # noqa: BLE001 - shown as a placeholder with the message as tooltip
            image, error = QImage(), str(exc) or type(exc).__name__
        self.relay.loaded.emit(self.key, image, error)


class ThumbnailLoader(QObject):
    ready = Signal(str)  # key: its image (or error) is now in the cache

    def __init__(self, parent: QObject | None = None, capacity: int = 600, threads: int = 2):
        super().__init__(parent)
        self.capacity = capacity
        self._cache: OrderedDict[str, tuple[QImage, str]] = OrderedDict()
        self._pending: OrderedDict[str, Callable[[], QImage]] = OrderedDict()
        self._in_flight: set[str] = set()
        self._generation = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._threads = threads
        self._relay = _Relay(self)
        self._relay.loaded.connect(self._on_loaded)

    def get(self, key: str, render: Callable[[], QImage]) -> QImage | None:
        """The cached image (a null QImage if it failed), or None after queueing its loading."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key][0]
        if self._tag(key) not in self._in_flight:
            self._pending[key] = render
            self._pending.move_to_end(key)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
            self._pump()
        return None

    def error(self, key: str) -> str:
        entry = self._cache.get(key)
        return entry[1] if entry else ""

    def invalidate(self, key: str) -> None:
        self._cache.pop(key, None)

    def clear(self) -> None:
        self._cache.clear()
        self._pending.clear()
        self._generation += 1  # results of loads started before now are dropped

    def idle(self) -> bool:
        return not self._pending and not self._in_flight

    def wait(self, msecs: int = -1) -> bool:
        return self._pool.waitForDone(msecs)

    def _tag(self, key: str) -> str:
        return f"{self._generation}\0{key}"

    def _pump(self) -> None:
        while self._pending and len(self._in_flight) < self._threads:
            key, render = self._pending.popitem(last=True)  # newest first
            self._in_flight.add(self._tag(key))
            self._pool.start(_Load(self._tag(key), render, self._relay))

    def _on_loaded(self, tagged: str, image: QImage, error: str) -> None:
        generation, key = tagged.split("\0", 1)
        self._in_flight.discard(tagged)
        if int(generation) == self._generation:
            self._cache[key] = (image, error)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
            self.ready.emit(key)
        self._pump()
