"""The retrieval database on disk: (polyp-free frame, mask of where a polyp was) entries with their features.

A database is a folder::

    manifest.json    format + version, count (the COMMITTED number of entries), feature bundle id + name,
                     grid, patch size, dim, created/updated, PolypForge version
    index.faiss      faiss.IndexFlatL2 of the L2-normalised global features, count rows
    globals.npy      the same normalised globals, float32 (rows, dim): the index can be rebuilt and verified
    locals.f16       patch features, raw float16, memory-mapped as (count, rows·cols, dim)
    coverage.u8      per entry and patch, the fraction of the patch its mask covers (0..255), (count, rows·cols)
    entries.jsonl    one JSON line per entry: id, source frame path, mask file, sha256 of the frame, how the
                     polyp-free frame was made ("supplied", "removed-by-<inpainting bundle id>", or
                     "polyp-frame": the shortcut where the polyp frame itself is the entry), frame size, box
    masks/0000000.png   the entry's mask, at its frame's size (0/255)
    thumbs/0000000.jpg  the entry's frame, at most 256 px on its long side (for --explain pictures)

**Commit protocol.** manifest.json's ``count`` is the single commit point. Every data file is append-only in
content: an add appends to locals.f16, coverage.u8 and entries.jsonl and writes new mask/thumbnail files,
then rewrites globals.npy and index.faiss (temp file + rename) with the new rows after the committed ones,
and only then replaces manifest.json (temp file + rename). A crash anywhere before that last rename leaves
the old count in force: readers use the first ``count`` rows of every file and ignore what lies beyond
(an index with extra rows is rebuilt from globals.npy[:count] in memory); the next add truncates the
uncommitted bytes and removes the uncommitted files before appending. A build writes the whole folder under
a temporary name beside the target and renames it into place at the end (engine.fileio.staged_folder).

Memory: an add holds one frame at a time; the only state that grows with the number of entries is the
global feature matrix (4·dim bytes per entry: 3 KB at ViT-B's 768, 150 MB at 50,000 entries), which the flat
FAISS index holds in memory anyway whenever it is written or searched.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engine import __version__ as engine_version
from engine.errors import InputError, PolypForgeError
from engine.fileio import atomic_write, atomic_write_bytes, encode_png, fsync_dir
from engine.retrieval.features import PatchGrid

DB_FORMAT = "polypforge-retrieval-db"
DB_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.faiss"
GLOBALS = "globals.npy"
LOCALS = "locals.f16"
COVERAGE = "coverage.u8"
ENTRIES = "entries.jsonl"
MASKS = "masks"
THUMBS = "thumbs"
LOCK = ".lock"
THUMB_SIDE = 256
MANIFEST_KEYS = ("format", "format_version", "count", "features", "grid", "patch_size", "dim", "created",
                 "updated", "polypforge_version", "files")


class DatabaseError(PolypForgeError):
    """A retrieval database is missing, damaged, or does not fit the feature extractor given."""


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - depends on the environment
        raise DatabaseError(
            "the retrieval database needs FAISS: pip install faiss-cpu (or faiss-gpu)"
        ) from None
    return faiss


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); a zero row stays zero."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def entry_name(entry_id: int) -> str:
    return f"{entry_id:07d}"


_fsync_dir = fsync_dir


def _write_npy_atomic(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False))


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not root.exists():
        raise DatabaseError(f"{root}: no such database folder")
    if not root.is_dir():
        raise DatabaseError(f"{root}: not a folder (a retrieval database is a folder holding {MANIFEST})")
    if not path.is_file():
        raise DatabaseError(f"{path}: missing: this folder is not a retrieval database (make one with `main.py db build`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatabaseError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise DatabaseError(f"{path}: must hold a JSON object")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise DatabaseError(f"{path}: lacks the key(s) {', '.join(missing)}")
    if manifest["format"] != DB_FORMAT:
        raise DatabaseError(f"{path}: format is {manifest['format']!r}, expected {DB_FORMAT!r}")
    if not isinstance(manifest["format_version"], int) or manifest["format_version"] > DB_FORMAT_VERSION:
        raise DatabaseError(f"{path}: format_version {manifest['format_version']!r} is newer than this PolypForge "
                            f"reads ({DB_FORMAT_VERSION}): update PolypForge")
    if not isinstance(manifest["count"], int) or manifest["count"] < 0:
        raise DatabaseError(f"{path}: count {manifest['count']!r} is not a non-negative integer")
    return manifest


def create_empty(root: Path, features: dict) -> None:
    """An empty database (count 0) for the given feature identity (FeatureExtractor.identity())."""
    root.mkdir(parents=True, exist_ok=True)
    rows, cols = (int(v) for v in features["grid"])
    dim = int(features["dim"])
    (root / MASKS).mkdir(exist_ok=True)
    (root / THUMBS).mkdir(exist_ok=True)
    for name in (LOCALS, COVERAGE, ENTRIES):
        (root / name).write_bytes(b"")
    _write_npy_atomic(root / GLOBALS, np.zeros((0, dim), np.float32))
    faiss = _faiss()
    faiss.write_index(faiss.IndexFlatL2(dim), str(root / INDEX))
    now = _now()
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


def in_mask_patches(coverage: np.ndarray) -> np.ndarray:
    """Indices of the patches that count as inside an entry's mask: covered by half or more; for a mask smaller
    than that everywhere, the most-covered patch(es) — so every non-empty mask has at least one patch."""
    coverage = np.asarray(coverage)
    inside = np.flatnonzero(coverage >= 128) if coverage.dtype == np.uint8 else np.flatnonzero(coverage >= 0.5)
    if inside.size == 0 and coverage.max(initial=0) > 0:
        inside = np.flatnonzero(coverage == coverage.max())
    return inside


class RetrievalDatabase:
    """A database opened for reading: global search, and per-entry features, coverage, mask and metadata."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = root
        self.manifest = manifest
        self.count = int(manifest["count"])
        rows, cols = (int(v) for v in manifest["grid"])
        self.grid = PatchGrid(rows, cols, int(manifest["patch_size"]))
        self.dim = int(manifest["dim"])
        self.features = dict(manifest["features"])
        self.notes: list[str] = []
        self._index = None
        self._globals = None
        self._locals = None
        self._coverage = None
        self._entry_offsets: list[int] | None = None
        self._entries_blob: bytes | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "RetrievalDatabase":
        root = Path(path).expanduser().resolve()
        db = cls(root, read_manifest(root))
        db._check_sizes()
        return db

    @property
    def db_id(self) -> str:
        """sha256 of manifest.json: changes with every committed add."""
        return hashlib.sha256((self.root / MANIFEST).read_bytes()).hexdigest()

    @property
    def entry_bytes(self) -> int:
        return self.grid.count * self.dim * 2

    def _check_sizes(self) -> None:
        for name in (INDEX, GLOBALS, LOCALS, COVERAGE, ENTRIES):
            if not (self.root / name).is_file():
                raise DatabaseError(f"{self.root / name}: missing from the database")
        need = {LOCALS: self.count * self.entry_bytes, COVERAGE: self.count * self.grid.count}
        for name, size in need.items():
            actual = (self.root / name).stat().st_size
            if actual < size:
                raise DatabaseError(f"{self.root / name}: {actual} bytes, but {self.count} entries need {size} "
                                    "(the file was cut short: rebuild the database)")

    def check_features(self, identity: dict) -> None:
        """DatabaseError unless `identity` (FeatureExtractor.identity()) is the feature model the db was built with."""
        mine = self.features
        if identity.get("bundle_id") != mine.get("bundle_id"):
            raise DatabaseError(
                f"{self.root}: built with the feature bundle {mine.get('name')!r} ({str(mine.get('bundle_id'))[:12]}…), "
                f"but the features given are {identity.get('name')!r} ({str(identity.get('bundle_id'))[:12]}…): their "
                f"features are not comparable; use --features {mine.get('name')} or build a new database"
            )
        for key in ("grid", "patch_size", "dim"):
            if list(np.atleast_1d(identity.get(key))) != list(np.atleast_1d(mine.get(key))):
                raise DatabaseError(f"{self.root}: the feature {key} is {mine.get(key)}, the extractor's {identity.get(key)}")

    # ------------------------------------------------------------------ arrays
    @property
    def globals(self) -> np.ndarray:
        """Normalised global features (count, dim), float32, memory-mapped."""
        if self._globals is None:
            array = np.load(self.root / GLOBALS, mmap_mode="r", allow_pickle=False)
            if array.ndim != 2 or array.shape[1] != self.dim or array.shape[0] < self.count or array.dtype != np.float32:
                raise DatabaseError(f"{self.root / GLOBALS}: shape {array.shape} {array.dtype}, expected at least "
                                    f"({self.count}, {self.dim}) float32")
            self._globals = array[: self.count]
        return self._globals

    @property
    def locals(self) -> np.ndarray:
        """Patch features (count, rows·cols, dim), float16, memory-mapped (nothing is read until indexed)."""
        if self._locals is None:
            if self.count == 0:
                self._locals = np.zeros((0, self.grid.count, self.dim), np.float16)
            else:
                self._locals = np.memmap(self.root / LOCALS, dtype=np.float16, mode="r",
                                         shape=(self.count, self.grid.count, self.dim))
        return self._locals

    @property
    def coverage(self) -> np.ndarray:
        """(count, rows·cols) uint8: 255 · fraction of each patch the entry's mask covers."""
        if self._coverage is None:
            if self.count == 0:
                self._coverage = np.zeros((0, self.grid.count), np.uint8)
            else:
                self._coverage = np.memmap(self.root / COVERAGE, dtype=np.uint8, mode="r",
                                           shape=(self.count, self.grid.count))
        return self._coverage

    @property
    def index(self):
        if self._index is None:
            faiss = _faiss()
            try:
                index = faiss.read_index(str(self.root / INDEX))
            except RuntimeError as exc:
                raise DatabaseError(f"{self.root / INDEX}: FAISS cannot read it ({str(exc).splitlines()[0]})") from None
            if index.d != self.dim:
                raise DatabaseError(f"{self.root / INDEX}: dimension {index.d}, the database's is {self.dim}")
            if index.ntotal != self.count:
                # An interrupted add wrote the new index but not the manifest: use the committed rows only.
                self.notes.append(f"{INDEX} holds {index.ntotal} rows for {self.count} committed entries "
                                  "(an interrupted add): rebuilt from globals.npy in memory")
                index = faiss.IndexFlatL2(self.dim)
                if self.count:
                    index.add(np.ascontiguousarray(self.globals, dtype=np.float32))
            self._index = index
        return self._index

    def search(self, query_global: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """(squared L2 distances, entry ids) of the top_k entries nearest the normalised query, best first."""
        if self.count == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        query = normalise(query_global)
        k = max(1, min(int(top_k), self.count))
        distances, ids = self.index.search(query, k)
        keep = ids[0] >= 0
        return distances[0][keep], ids[0][keep].astype(np.int64)

    # ------------------------------------------------------------------ entries
    def _load_entry_offsets(self) -> None:
        blob = (self.root / ENTRIES).read_bytes()
        offsets = [0]
        position = 0
        for _ in range(self.count):
            newline = blob.find(b"\n", position)
            if newline < 0:
                raise DatabaseError(f"{self.root / ENTRIES}: fewer lines than the {self.count} committed entries")
            position = newline + 1
            offsets.append(position)
        self._entries_blob = blob[:position]
        self._entry_offsets = offsets

    def entry(self, entry_id: int) -> dict[str, Any]:
        if not 0 <= entry_id < self.count:
            raise IndexError(f"entry {entry_id} is not in 0..{self.count - 1}")
        if self._entry_offsets is None:
            self._load_entry_offsets()
        start, end = self._entry_offsets[entry_id], self._entry_offsets[entry_id + 1]
        return json.loads(self._entries_blob[start:end].decode("utf-8"))

    def entries(self):
        for entry_id in range(self.count):
            yield self.entry(entry_id)

    def mask(self, entry_id: int) -> np.ndarray:
        from engine.dataset.image_reader import read_mask

        return read_mask(self.root / self.entry(entry_id)["mask"])

    def thumbnail(self, entry_id: int) -> np.ndarray | None:
        from engine.dataset.image_reader import read_frame

        rel = self.entry(entry_id).get("thumbnail")
        if not rel or not (self.root / rel).is_file():
            return None
        return read_frame(self.root / rel)

    # ------------------------------------------------------------------ integrity
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def verify(self, check_bundle: bool = True) -> tuple[list[str], list[str]]:
        """(problems, notes): files present, sizes consistent with count, index rows and contents equal to
        globals.npy, entries in order with their mask files, and the feature bundle's id."""
        problems: list[str] = []
        notes: list[str] = []
        root = self.root
        for name in (INDEX, GLOBALS, LOCALS, COVERAGE, ENTRIES):
            if not (root / name).is_file():
                problems.append(f"{name}: missing")
        for name in (MASKS, THUMBS):
            if not (root / name).is_dir():
                problems.append(f"{name}/: missing")
        if problems:
            return problems, notes
        for name, per_entry in ((LOCALS, self.entry_bytes), (COVERAGE, self.grid.count)):
            size, need = (root / name).stat().st_size, self.count * per_entry
            if size < need:
                problems.append(f"{name}: {size} bytes, {self.count} entries need {need}")
            elif size > need:
                notes.append(f"{name}: {size - need} bytes beyond the committed {self.count} entries "
                             "(an interrupted add): ignored, removed by the next add")
        try:
            globals_ = self.globals
            norms = np.linalg.norm(globals_, axis=1) if len(globals_) else np.ones(0)
            if np.any(np.abs(norms - 1) > 1e-3):
                problems.append(f"{GLOBALS}: {int(np.sum(np.abs(norms - 1) > 1e-3))} rows are not unit length")
        except (DatabaseError, ValueError, OSError) as exc:
            problems.append(str(exc))
            globals_ = None
        try:
            faiss = _faiss()
            index = faiss.read_index(str(root / INDEX))
            if index.d != self.dim:
                problems.append(f"{INDEX}: dimension {index.d}, expected {self.dim}")
            elif index.ntotal < self.count:
                problems.append(f"{INDEX}: {index.ntotal} rows, {self.count} entries committed")
            else:
                if index.ntotal > self.count:
                    notes.append(f"{INDEX}: {index.ntotal - self.count} rows beyond the committed entries "
                                 "(an interrupted add): ignored, rewritten by the next add")
                if globals_ is not None and self.count:
                    stored = index.reconstruct_n(0, self.count)
                    if not np.array_equal(stored, np.asarray(globals_)):
                        problems.append(f"{INDEX}: its vectors differ from {GLOBALS} (rebuild the database)")
        except RuntimeError as exc:
            problems.append(f"{INDEX}: FAISS cannot read it ({str(exc).splitlines()[0]})")
        try:
            self._load_entry_offsets()
            for entry_id in range(self.count):
                entry = self.entry(entry_id)
                if entry.get("id") != entry_id:
                    problems.append(f"{ENTRIES}: line {entry_id + 1} has id {entry.get('id')!r}, expected {entry_id}")
                    break
                if not (root / entry["mask"]).is_file():
                    problems.append(f"{entry['mask']}: missing (entry {entry_id})")
            extra = (root / ENTRIES).stat().st_size - len(self._entries_blob or b"")
            if extra > 0:
                notes.append(f"{ENTRIES}: {extra} bytes beyond the committed entries (an interrupted add): ignored")
        except (DatabaseError, json.JSONDecodeError, UnicodeDecodeError, KeyError) as exc:
            problems.append(f"{ENTRIES}: {exc}")
        if check_bundle:
            problem, note = self._check_bundle_on_disk()
            if problem:
                problems.append(problem)
            if note:
                notes.append(note)
        return problems, notes

    def _check_bundle_on_disk(self) -> tuple[str | None, str | None]:
        from engine.bundle.format import find_bundle, read_bundle
        from engine.errors import BundleError

        name = self.features.get("name")
        if self.features.get("kind") != "dinov2":
            return None, f"features from {name!r} (kind {self.features.get('kind')!r}, not a bundle)"
        try:
            bundle = read_bundle(find_bundle(name), verify_hashes=True)
        except BundleError as exc:
            return None, f"the feature bundle {name!r} is not in the bundles folder ({exc.problem}): pass --features"
        if bundle.bundle_id != self.features.get("bundle_id"):
            return (f"the feature bundle {name!r} found at {bundle.root} has id {bundle.bundle_id[:12]}…, the "
                    f"database was built with {str(self.features.get('bundle_id'))[:12]}…"), None
        return None, None

    def info(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.root),
            "db_id": self.db_id,
            "count": self.count,
            "size_bytes": self.size_bytes(),
            "features": self.features,
            "grid": m["grid"],
            "patch_size": m["patch_size"],
            "dim": m["dim"],
            "created": m["created"],
            "updated": m["updated"],
            "polypforge_version": m["polypforge_version"],
            "how": self._how_counts(),
        }

    def _how_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            for entry in self.entries():
                counts[entry.get("how", "?")] = counts.get(entry.get("how", "?"), 0) + 1
        except (DatabaseError, json.JSONDecodeError, UnicodeDecodeError):
            pass
        return counts


class DatabaseWriter:
    """Appends entries to a database; ``commit()`` makes them part of it (see the module's commit protocol).

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
        self.db._load_entry_offsets()
        keep = len(self.db._entries_blob or b"")
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
            "added": _now(),
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
        self.db._globals = None  # the old memmap is about to be replaced
        _write_npy_atomic(self.root / GLOBALS, globals_)
        faiss = _faiss()
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
        manifest["updated"] = _now()
        manifest["polypforge_version"] = engine_version
        atomic_write_bytes(self.root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
        _fsync_dir(self.root)
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

