"""sha256 of bundle files, with a per-user cache so an unchanged multi-GB U-Net is hashed once, not per load.

The cache key is (absolute path, size, mtime in ns, inode): any rewrite of a file changes at least one of
them, so a cached digest is only reused for the very same bytes on disk. The cache lives in the user's cache
folder (``POLYPFORGE_CACHE_DIR`` overrides it), never inside the bundle, which may be read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

CHUNK_BYTES = 4 * 1024 * 1024


def cache_dir() -> Path:
    override = os.environ.get("POLYPFORGE_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA") or str(Path.home() / ".cache")
    return Path(base) / "polypforge"


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


class HashCache:
    """Digests of files already hashed, keyed by their stat; saved atomically, ignored when unreadable."""

    def __init__(self, location: Path | None = None):
        self.location = location or (cache_dir() / "file_hashes.json")
        self._entries: dict[str, str] = {}
        self._dirty = False
        try:
            loaded = json.loads(self.location.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                self._entries = {str(k): str(v) for k, v in loaded.items()}
        except (OSError, ValueError):
            self._entries = {}

    def sha256(self, path: Path) -> str:
        key = _stat_key(path)
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        digest = sha256_of_file(path)
        self._entries[key] = digest
        self._dirty = True
        return digest

    def save(self) -> None:
        if not self._dirty:
            return
        try:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.location.parent, prefix=".hashes-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self._entries, handle)
            os.replace(tmp, self.location)
            self._dirty = False
        except OSError:
            # A cache that cannot be written only costs time on the next load.
            pass
