"""Errors the engine raises on purpose: each names the file or option at fault and what is wrong."""

from __future__ import annotations

from pathlib import Path


class PolypForgeError(Exception):
    """Base class: an error with a message meant for the curator, not a traceback."""


class BundleError(PolypForgeError):
    """A model bundle is missing a file, fails its hash check, or holds an ONNX model of the wrong shape."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class InputError(PolypForgeError):
    """A frame, a mask or an argument cannot be used as given."""


class ExportError(PolypForgeError):
    """Export from a diffusers folder failed, or the exported ONNX disagrees with the torch model."""


class OutputLocked(PolypForgeError):
    """An output folder is being written by another job (or a review) whose process is still alive."""


class Cancelled(PolypForgeError):
    """A run stopped because its cancel check returned True."""
