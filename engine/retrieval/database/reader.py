"""Reading a retrieval database (layout.py says what the files hold): global search, and per entry its
features, mask coverage, mask, thumbnail and metadata; verify() and info() for `main.py db check / info`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.retrieval.database.layout import (
    COVERAGE,
    ENTRIES,
    GLOBALS,
    INDEX,
    LOCALS,
    MANIFEST,
    MASKS,
    THUMBS,
    DatabaseError,
    load_faiss,
    normalise,
    read_manifest,
)
from engine.retrieval.features import PatchGrid


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

    def forget_globals(self) -> None:
        """Drop the memory map of globals.npy: a writer is about to replace the file."""
        self._globals = None

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
            faiss = load_faiss()
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

    def committed_entries_size(self) -> int:
        """Bytes of entries.jsonl the committed entries take, read afresh from disk: what lies beyond them is
        an interrupted add's."""
        self._load_entry_offsets()
        return len(self._entries_blob)

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
            faiss = load_faiss()
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
            committed = self.committed_entries_size()
            for entry_id in range(self.count):
                entry = self.entry(entry_id)
                if entry.get("id") != entry_id:
                    problems.append(f"{ENTRIES}: line {entry_id + 1} has id {entry.get('id')!r}, expected {entry_id}")
                    break
                if not (root / entry["mask"]).is_file():
                    problems.append(f"{entry['mask']}: missing (entry {entry_id})")
            extra = (root / ENTRIES).stat().st_size - committed
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
