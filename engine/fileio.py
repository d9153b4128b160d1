"""Atomic writes: a temp file in the destination folder, flushed, then renamed over the target.

A run killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np
from PIL import Image


@contextmanager
def atomic_writer(path: str | os.PathLike[str], durable: bool = True) -> Iterator[BinaryIO]:
    """A binary handle on a temp file beside `path`; when the block ends without an exception the file is
    flushed, fsynced and renamed over `path`, otherwise removed. For files written as a stream.

    ``durable=False`` skips the fsync (the rename stays atomic against a kill): for many small files derived
    from data that is itself durable, made durable together by one ``sync_written_files()`` afterwards."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a temp file beside `path`, fsync, then rename it over `path`."""
    with atomic_writer(path) as handle:
        write(handle)
    return Path(path)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (best effort: some filesystems refuse to fsync a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, durable: bool = True) -> Path:
    with atomic_writer(path, durable=durable) as handle:
        handle.write(data)
    return Path(path)


# One sync for a tree of small files instead of an fsync each (100k label files: seconds, not ~20 minutes
# on a disk that takes a few ms per fsync). Where the OS has no sync(), each file is fsynced as written.
BATCHED_SYNC = hasattr(os, "sync")


def sync_written_files() -> None:
    """Make the files written with ``durable=not BATCHED_SYNC`` durable (a no-op where each was fsynced)."""
    if BATCHED_SYNC:
        os.sync()


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) or (H, W, 3) array, with no metadata chunks."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def save_png_atomic(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    return atomic_write_bytes(path, encode_png(image))


class StagedFolder:
    """Paths of a folder being built beside its destination: scratch space and the result to install."""

    def __init__(self, work: Path):
        self.work = work
        self.result = work / "result"


@contextmanager
def staged_folder(destination: str | os.PathLike[str]):
    """Build a folder under a temporary name beside `destination`, then swap it in by renames.

    Whatever the caller put in ``.result`` replaces `destination` only when the block ends without an
    exception; on any failure (or a kill) nothing under the destination name changes and the scratch
    folder is removed.
    """
    target = Path(destination)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        staged = StagedFolder(work)
        yield staged
        if target.exists():
            os.replace(target, work / "previous")
        os.replace(staged.result, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
