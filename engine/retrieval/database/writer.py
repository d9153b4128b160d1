"""Writing a retrieval database: an empty one (create_empty), and entries appended and committed by a
DatabaseWriter under layout.py's commit protocol (manifest.json's count is the single commit point)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from engine import __version__ as engine_version
from engine.errors import InputError
from engine.fileio import atomic_write_bytes, encode_png, fsync_dir
from engine.retrieval.database.layout import (
    COVERAGE,
    DB_FORMAT,
    DB_FORMAT_VERSION,
    ENTRIES,
    GLOBALS,
    INDEX,
    LOCALS,
    LOCK,
    MANIFEST,
    MASKS,
    THUMB_SIDE,
    THUMBS,
    DatabaseError,
    entry_name,
    load_faiss,
    normalise,
    utc_now,
    write_npy_atomic,
)
from engine.retrieval.database.reader import RetrievalDatabase


def create_empty(root: Path, features: dict) -> None:
    """An empty database (count 0) for the given feature identity (FeatureExtractor.identity())."""
    root.mkdir(parents=True, exist_ok=True)
    rows, cols = (int(v) for v in features["grid"])
    dim = int(features["dim"])
    (root / MASKS).mkdir(exist_ok=True)
    (root / THUMBS).mkdir(exist_ok=True)
    for name in (LOCALS, COVERAGE, ENTRIES):
        (root / name).write_bytes(b"")
    write_npy_atomic(root / GLOBALS, np.zeros((0, dim), np.float32))
    faiss = load_faiss()
    faiss.write_index(faiss.IndexFlatL2(dim), str(root / INDEX))
    now = utc_now()
    manifest = {
        "format": DB_FORMAT,
        "format_version": DB_FORMAT_VERSION,
        "count": 0,
        "features": dict(features),
        "grid": [rows, cols],
        "patch_size": int(features["patch_size"]),
        "dim": dim,
        "locals_dtype": "float16",
        "globals": "L2-normalised mean of the patch tokens, float32",
        "created": now,
        "updated": now,
        "polypforge_version": engine_version,
        "files": {"index": INDEX, "globals": GLOBALS, "locals": LOCALS, "coverage": COVERAGE, "entries": ENTRIES,
                  "masks": MASKS + "/", "thumbnails": THUMBS + "/"},
    }
    atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))


class DatabaseWriter:
    """Appends entries to a database; ``commit()`` makes them part of it (see layout.py's commit protocol).

    Opening takes an exclusive lock (one writer at a time), checks the feature identity, and truncates
    whatever an interrupted add left beyond the committed count."""

    def __init__(self, root: str | os.PathLike[str], features: dict):
        import fcntl

        self.root = Path(root).expanduser().resolve()
        self._lock_handle = open(self.root / LOCK, "a+b") if self.root.is_dir() else None
        if self._lock_handle is None:
            raise DatabaseError(f"{self.root}: no such database folder")
        try:
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_handle.close()
            raise DatabaseError(f"{self.root}: another process is adding to this database") from None
        try:
            self.db = RetrievalDatabase.open(self.root)
            self.db.check_features(features)
            self.committed = self.db.count
            self.truncated = self._truncate_uncommitted()
        except BaseException:
            self.close()
            raise
        self.grid = self.db.grid
        self.dim = self.db.dim
        self._pending_globals: list[np.ndarray] = []
        self._pending_shas: set[str] = set()
        self._locals = open(self.root / LOCALS, "ab")
        self._coverage = open(self.root / COVERAGE, "ab")
        self._entries = open(self.root / ENTRIES, "ab")

    @property
    def pending(self) -> int:
        return len(self._pending_globals)

    def _truncate_uncommitted(self) -> dict[str, int]:
        """Cut every file back to the committed count; returns what was removed (bytes or files)."""
        removed: dict[str, int] = {}
        count = self.committed
        for name, per_entry in ((LOCALS, self.db.entry_bytes), (COVERAGE, self.db.grid.count)):
            path = self.root / name
            keep = count * per_entry
            size = path.stat().st_size
            if size > keep:
                os.truncate(path, keep)
                removed[name] = size - keep
        path = self.root / ENTRIES
        keep = self.db.committed_entries_size()
        size = path.stat().st_size
        if size > keep:
            os.truncate(path, keep)
            removed[ENTRIES] = size - keep
        stray = 0
        for folder in (MASKS, THUMBS):
            for file in (self.root / folder).iterdir():
                stem = file.name.split(".")[0]
                if file.name.startswith(".") or not stem.isdigit() or int(stem) >= count:
                    file.unlink()
                    stray += 1
        for file in self.root.iterdir():
            if file.is_file() and file.name.startswith(".") and file.name.endswith(".tmp"):
                file.unlink()
                stray += 1
        if stray:
            removed["files"] = stray
        return removed

    def known_shas(self) -> set[str]:
        """sha256 of the frames already in the database (committed or pending)."""
        shas = {entry.get("sha256") for entry in self.db.entries()}
        return shas | self._pending_shas

    def add(self, local: np.ndarray, global_: np.ndarray, mask: np.ndarray, entry_frame: np.ndarray,
            source: str, sha256: str, how: str, extra: dict | None = None) -> int:
        """Append one entry (not committed until commit()). `local` (rows·cols, dim), `mask` bool frame-sized,
        `entry_frame` the polyp-free frame the features were computed from (for the thumbnail)."""
        local = np.asarray(local, dtype=np.float32)
        if local.shape != (self.grid.count, self.dim):
            raise DatabaseError(f"local features of shape {local.shape}, the database holds {(self.grid.count, self.dim)}")
        if not np.all(np.isfinite(local)):
            raise InputError("the feature model gave non-finite features for this frame")
        mask = np.asarray(mask, dtype=bool)
        height, width = mask.shape
        entry_id = self.committed + self.pending
        name = entry_name(entry_id)
        coverage = np.rint(self.grid.coverage(mask) * 255).astype(np.uint8)
        mask_rel = f"{MASKS}/{name}.png"
        thumb_rel = f"{THUMBS}/{name}.jpg"
        _write_file(self.root / mask_rel, encode_png(mask.astype(np.uint8) * 255))
        _write_file(self.root / thumb_rel, _encode_thumbnail(entry_frame))
        self._locals.write(local.astype(np.float16).tobytes())
        self._coverage.write(coverage.tobytes())
        from engine.masks.instances import bbox_of

        record = {
            "id": entry_id,
            "source": source,
            "sha256": sha256,
            "how": how,
            "mask": mask_rel,
            "thumbnail": thumb_rel,
            "frame_size": [int(width), int(height)],
            "mask_box": [round(v, 1) for v in bbox_of(mask)] if mask.any() else None,
            "mask_pixels": int(mask.sum()),
            "added": utc_now(),
            **(extra or {}),
        }
        self._entries.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._pending_globals.append(normalise(global_)[0])
        self._pending_shas.add(sha256)
        return entry_id

    def commit(self) -> int:
        """Make the pending entries part of the database; returns the new count."""
        for handle in (self._locals, self._coverage, self._entries):
            handle.flush()
            os.fsync(handle.fileno())
        if hasattr(os, "sync"):
            os.sync()  # the new mask and thumbnail files, in one go
        count = self.committed + self.pending
        old = np.asarray(self.db.globals, dtype=np.float32) if self.committed else np.zeros((0, self.dim), np.float32)
        new = np.stack(self._pending_globals) if self._pending_globals else np.zeros((0, self.dim), np.float32)
        globals_ = np.ascontiguousarray(np.concatenate([old, new]), dtype=np.float32)
        self.db.forget_globals()
        write_npy_atomic(self.root / GLOBALS, globals_)
        faiss = load_faiss()
        index = faiss.IndexFlatL2(self.dim)
        if count:
            index.add(globals_)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{INDEX}.", suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(index, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.root / INDEX)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        del index, globals_
        manifest = dict(self.db.manifest)
        manifest["count"] = count
        manifest["updated"] = utc_now()
        manifest["polypforge_version"] = engine_version
        atomic_write_bytes(self.root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
        fsync_dir(self.root)
        # The committed state is the new one from here on.
        self.db = RetrievalDatabase.open(self.root)
        self.committed = count
        self._pending_globals = []
        return count

    def close(self) -> None:
        for name in ("_locals", "_coverage", "_entries"):
            handle = getattr(self, name, None)
            if handle is not None:
                handle.close()
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self) -> "DatabaseWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_file(path: Path, data: bytes) -> None:
    """Write under a temporary name and rename (no fsync here: commit() syncs all new files at once)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _encode_thumbnail(frame: np.ndarray) -> bytes:
    from PIL import Image

    image = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()

