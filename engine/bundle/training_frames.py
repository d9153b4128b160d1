"""Which frames a model was trained on, by content: so an evaluation can tell test frames it has seen from new ones.

A model bundle may carry ``training_frames.txt`` — one line per training frame, ``<sha256 of the file bytes>  <name>``
(the name as the training run read it, e.g. ``kvasir-seg/images/cju0qkwl35piu0993l0dewei2.jpg``) — and name it in
bundle.json::

    "training_frames": {"file": "training_frames.txt", "sha256": "<sha256 of that file>", "count": 968}

The learning curve compares a test set's frames with the training frames of the model that made each arm's synthetic
frames: a test frame the generator trained on is one whose polyp the generator may paint back, which the real and
copy-paste arms never saw, so a generated arm's gain on it is an upper bound (engine.evaluation.curve_report reports
the gain on the test frames the generator never trained on beside the gain on all). Matched by content (sha256 of the
file bytes, as the leak check), so a renamed copy of a training frame is still recognised; a re-encoded one is not.

The training run writes the list beside the model (engine.training.model_card) and the export copies it into the
bundle. A bundle without the key has no list: nothing is known about its training frames.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from engine.errors import BundleError
from engine.fileio import atomic_write_bytes

KEY = "training_frames"
FILE_NAME = "training_frames.txt"


@dataclass(frozen=True)
class TrainingFrames:
    names: dict[str, str]  # sha256 → the name the training run read it by

    @property
    def sha256(self) -> frozenset[str]:
        return frozenset(self.names)

    def __len__(self) -> int:
        return len(self.names)


def format_lines(entries) -> bytes:
    """``entries``: (sha256, name) pairs → the file's bytes (sorted by name, one line each)."""
    return "".join(f"{sha}  {name}\n" for sha, name in sorted(entries, key=lambda e: e[1])).encode("utf-8")


def _write(folder: Path, data: bytes) -> dict:
    """``data`` written atomically as ``folder``/training_frames.txt; the bundle.json entry naming it."""
    atomic_write_bytes(Path(folder) / FILE_NAME, data)
    return {"file": FILE_NAME, "sha256": hashlib.sha256(data).hexdigest(), "count": data.count(b"\n")}


def write_training_frames(folder: Path, entries) -> dict:
    """Write ``folder``/training_frames.txt from (sha256, name) pairs; returns the bundle.json entry naming it."""
    return _write(folder, format_lines(entries))


def copy_training_frames(model_dir: Path, bundle: Path) -> dict | None:
    """At export: the model folder's training_frames.txt copied into the bundle; the bundle.json entry, or None when
    the model folder has none (a model trained before the list existed)."""
    source = Path(model_dir) / FILE_NAME
    if not source.is_file():
        return None
    return _write(bundle, source.read_bytes())


def parse_lines(text: str, source: Path) -> dict[str, str]:
    names = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        sha, _, name = line.partition("  ")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise BundleError(source, f"line {number} does not start with a sha256 hex digest: {line[:80]!r}")
        names[sha] = name.strip()
    return names


def training_frames_of(bundle) -> TrainingFrames | None:
    """The training frames a bundle (engine.bundle.format.Bundle) names, None when it names none; BundleError when
    the entry is malformed or the file is missing or altered."""
    entry = bundle.manifest.get(KEY)
    if entry is None:
        return None
    manifest_path = bundle.root / "bundle.json"
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not isinstance(entry.get("sha256"), str):
        raise BundleError(manifest_path, f"'{KEY}' must name a file and its sha256, got {entry!r}")
    rel = Path(entry["file"])
    if rel.is_absolute() or ".." in rel.parts:
        raise BundleError(manifest_path, f"'{KEY}.file' {entry['file']!r} points outside the bundle")
    path = bundle.root / rel
    try:
        data = path.read_bytes()
    except OSError:
        raise BundleError(path, f"missing from the bundle (bundle.json's '{KEY}' names it)") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise BundleError(path, f"sha256 mismatch with bundle.json's '{KEY}' (the file was altered)")
    return TrainingFrames(parse_lines(data.decode("utf-8"), path))
