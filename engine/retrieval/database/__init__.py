"""The retrieval database on disk: (polyp-free frame, mask of where a polyp was) entries with their features.

- layout.py — the folder's files, the manifest and its checks, the commit protocol (its docstring);
- reader.py — RetrievalDatabase: opened for reading, search, per-entry data, verify and info;
- writer.py — create_empty and DatabaseWriter: entries appended, then committed by the manifest's count.

Callers import from here: ``from engine.retrieval.database import RetrievalDatabase``.
"""

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
    MANIFEST_KEYS,
    MASKS,
    THUMB_SIDE,
    THUMBS,
    DatabaseError,
    entry_name,
    in_mask_patches,
    normalise,
    read_manifest,
)
from engine.retrieval.database.reader import RetrievalDatabase
from engine.retrieval.database.writer import DatabaseWriter, create_empty

__all__ = [
    "COVERAGE",
    "DB_FORMAT",
    "DB_FORMAT_VERSION",
    "ENTRIES",
    "GLOBALS",
    "INDEX",
    "LOCALS",
    "LOCK",
    "MANIFEST",
    "MANIFEST_KEYS",
    "MASKS",
    "THUMBS",
    "THUMB_SIDE",
    "DatabaseError",
    "DatabaseWriter",
    "RetrievalDatabase",
    "create_empty",
    "entry_name",
    "in_mask_patches",
    "normalise",
    "read_manifest",
]
