"""The retrieval database's on-disk format: file names, the manifest and its checks, and the conventions that
reader and writer share (normalised globals, entry names, what "inside the mask" means for a patch).

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
import json
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import PolypForgeError
from engine.fileio import atomic_write

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


def load_faiss():
    """The faiss module; a DatabaseError saying how to install it when it is missing."""
    try:
        import faiss
    except ImportError:  # pragma: no cover - depends on the environment
        raise DatabaseError(
            "the retrieval database needs FAISS: pip install faiss-cpu (or faiss-gpu)"
        ) from None
    return faiss


def utc_now() -> str:
    """The time a manifest or an entry records: UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); a zero row stays zero."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def entry_name(entry_id: int) -> str:
    """The stem of an entry's mask and thumbnail files (masks/0000042.png)."""
    return f"{entry_id:07d}"


def write_npy_atomic(path: Path, array: np.ndarray) -> None:
    """globals.npy replaced whole (temp file + rename), so a reader sees the old rows or the new ones."""
    atomic_write(path, lambda handle: np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False))


def read_manifest(root: Path) -> dict[str, Any]:
    """manifest.json of the database folder ``root``, checked: a DatabaseError names what is wrong."""
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


def in_mask_patches(coverage: np.ndarray) -> np.ndarray:
    """Indices of the patches that count as inside an entry's mask: covered by half or more; for a mask smaller
    than that everywhere, the most-covered patch(es) — so every non-empty mask has at least one patch."""
    coverage = np.asarray(coverage)
    inside = np.flatnonzero(coverage >= 128) if coverage.dtype == np.uint8 else np.flatnonzero(coverage >= 0.5)
    if inside.size == 0 and coverage.max(initial=0) > 0:
        inside = np.flatnonzero(coverage == coverage.max())
    return inside

