"""The mask being drawn on one frame: brush, eraser, rectangle, polygon, clear, undo/redo, save.

Coordinates are frame pixels (floats are rounded). The mask is saved as a single-channel 0/255 PNG
(engine.fileio.save_png_atomic) where the batch job pairs it with its frame (see dataset.mask_target). If
the frame's old mask had another extension (Kvasir ships .jpg masks), it is renamed to ``<name>.bak`` so
that only the new mask pairs with the frame — nothing of the curator's is deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QObject, Signal

from engine.fileio import save_png_atomic

UNDO_LEVELS = 50


class MaskEditor(QObject):
    changed = Signal()  # the mask, or what undo/redo can do, changed
    loaded = Signal()  # another frame (or none) is being edited
    saved = Signal(str)  # path of the written mask

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.frame: np.ndarray | None = None  # RGB uint8 (H, W, 3)
        self._mask: np.ndarray | None = None  # uint8 0/1 (H, W)
        self.old_mask_path: Path | None = None
        self.target: Path | None = None
        self.item = None  # the FrameItem being edited
        self.dirty = False
        self.version = 0  # bumps on every change (views cache their overlay by it)
        self._undo: list[bytes] = []
        self._redo: list[bytes] = []
        self._last: tuple[int, int] | None = None
        self._radius = 8
        self._value = 1

    # ------------------------------------------------------------------ state
    def load(self, frame: np.ndarray, mask: np.ndarray | None, target: Path, item=None,
             old_mask_path: Path | None = None) -> None:
        height, width = frame.shape[:2]
        self.frame = frame
        if mask is not None and mask.shape != (height, width):
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        self._mask = np.zeros((height, width), np.uint8) if mask is None else (mask > 0).astype(np.uint8)
        self.target, self.item, self.old_mask_path = Path(target), item, old_mask_path
        self.dirty = False
        self._undo.clear()
        self._redo.clear()
        self._bump(loaded=True)

    def unload(self) -> None:
        self.frame = self._mask = self.target = self.item = None
        self.dirty = False
        self._undo.clear()
        self._redo.clear()
        self._bump(loaded=True)

    @property
    def active(self) -> bool:
        return self._mask is not None

    @property
    def mask(self) -> np.ndarray:
        return self._mask.astype(bool)

    @property
    def shape(self) -> tuple[int, int]:
        return self._mask.shape

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def coverage(self) -> float:
        return float(self._mask.mean()) if self._mask is not None else 0.0

    # ------------------------------------------------------------------ tools
    def begin_stroke(self, x: float, y: float, radius: int, erase: bool = False) -> None:
        """Brush (or eraser) down at (x, y); the whole stroke is one undo step."""
        self._snapshot()
        self._radius, self._value = max(1, int(radius)), 0 if erase else 1
        self._last = (round(x), round(y))
        cv2.circle(self._mask, self._last, self._radius, self._value, -1)
        self._bump()

    def stroke_to(self, x: float, y: float) -> None:
        if self._last is None:
            return
        point = (round(x), round(y))
        cv2.line(self._mask, self._last, point, self._value, 2 * self._radius + 1)
        cv2.circle(self._mask, point, self._radius, self._value, -1)
        self._last = point
        self._bump()

    def end_stroke(self) -> None:
        self._last = None

    def fill_rect(self, x0: float, y0: float, x1: float, y1: float, erase: bool = False) -> None:
        height, width = self._mask.shape
        left, right = sorted((int(np.clip(round(x0), 0, width)), int(np.clip(round(x1), 0, width))))
        top, bottom = sorted((int(np.clip(round(y0), 0, height)), int(np.clip(round(y1), 0, height))))
        if right - left < 1 or bottom - top < 1:
            return
        self._snapshot()
        self._mask[top:bottom, left:right] = 0 if erase else 1
        self._bump()

    def fill_polygon(self, points: list[tuple[float, float]], erase: bool = False) -> None:
        if len(points) < 3:
            return
        self._snapshot()
        array = np.round(np.asarray(points, np.float64)).astype(np.int32)
        cv2.fillPoly(self._mask, [array], 0 if erase else 1)
        self._bump()

    def set_mask(self, mask: np.ndarray) -> None:
        """Replace the mask (e.g. with a retrieval proposal); one undo step."""
        self._snapshot()
        self._mask = (np.asarray(mask) > 0).astype(np.uint8)
        self._bump()

    def clear(self) -> None:
        if not self._mask.any():
            return
        self._snapshot()
        self._mask[:] = 0
        self._bump()

    def undo(self) -> None:
        if self._undo:
            self._redo.append(self._pack())
            self._unpack(self._undo.pop())
            self._bump()

    def redo(self) -> None:
        if self._redo:
            self._undo.append(self._pack())
            self._unpack(self._redo.pop())
            self._bump()

    # ------------------------------------------------------------------ saving
    def save(self) -> Path:
        """Write the mask (0/255 PNG) to its target; OSError (disk full, no permission) propagates."""
        target = self.target
        save_png_atomic(target, self._mask * np.uint8(255))
        old = self.old_mask_path
        if old is not None and old != target and old.exists() and old.with_suffix("") == target.with_suffix(""):
            os.replace(old, old.with_name(old.name + ".bak"))
        self.old_mask_path = target
        self.dirty = False
        self.changed.emit()
        self.saved.emit(str(target))
        return target

    # ------------------------------------------------------------------ internals
    def _pack(self) -> bytes:
        return np.packbits(self._mask).tobytes()

    def _unpack(self, data: bytes) -> None:
        height, width = self._mask.shape
        bits = np.unpackbits(np.frombuffer(data, np.uint8), count=height * width)
        self._mask = bits.reshape(height, width).astype(np.uint8)

    def _snapshot(self) -> None:
        self._undo.append(self._pack())
        del self._undo[:-UNDO_LEVELS]
        self._redo.clear()

    def _bump(self, loaded: bool = False) -> None:
        self.version += 1
        if loaded:
            self.loaded.emit()
        else:
            self.dirty = True
        self.changed.emit()
