"""DINOv2 patch features from a "dinov2" bundle, run by onnxruntime (no torch), and the exact patch geometry.

Preparing a frame: the **whole frame is resized** to a fixed grid of rows × cols patches (the bundle's grid,
16 × 16 → 224 × 224 px for the demo and the default export), then normalised with the bundle's mean/std
(ImageNet's for DINOv2). Resize, not crop (the Polyp-Gen code crops each frame to a multiple of 14 px),
because:

- a polyp may be anywhere in a frame, borders included: cropping to a multiple of the patch size, or
  center-cropping to a square, throws away frame borders where a candidate's polyp may have been, and a query
  region that is cut off can never be proposed;
- a fixed grid makes every database entry the same size, (rows·cols, dim), whatever the frame size: the local
  features are one memory-mapped array, query and candidates are compared patch for patch, and frames of
  different sizes (Kvasir's vary from 332×487 to 1920×1072) share one database;
- the mapping back to frame pixels stays exact: the resize maps the frame rectangle [0, W) × [0, H) onto
  [0, cols·P) × [0, rows·P) (OpenCV's pixel-area convention), so model-input pixel x is frame pixel
  x · W / (cols·P) — see ``PatchGrid``.

The price is a change of aspect ratio (a 4:3 frame is squeezed to 1:1); DINOv2 features tolerate that well,
and queries and database entries are squeezed the same way.

Local features are the patch tokens (class token dropped, after DINOv2's final layer norm); the global
feature is their mean. ``MeanColourExtractor`` is a deterministic, model-free stand-in with the same interface
(each patch's mean normalised colour), for tests and geometry checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from engine.bundle import Bundle, read_bundle
from engine.errors import BundleError, InputError
from engine.runtime.opening import BundleSource, OnePartModel, Signature


@dataclass(frozen=True)
class PatchGrid:
    """rows × cols patches of `patch` model-input pixels; the model input is (cols·patch) × (rows·patch).

    Patch index i is row i // cols, column i % cols (row-major, as ViT tokens are ordered). Its model-input
    rectangle is [c·P, (c+1)·P) × [r·P, (r+1)·P) and its centre (c·P + P/2, r·P + P/2). In a W × H frame the
    same patch is the rectangle [c·P·sx, (c+1)·P·sx) × [r·P·sy, (r+1)·P·sy) with sx = W / (cols·P),
    sy = H / (rows·P): the patches tile the frame exactly (continuous pixel coordinates, pixel k spans
    [k, k+1))."""

    rows: int
    cols: int
    patch: int

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input in pixels."""
        return self.cols * self.patch, self.rows * self.patch

    def scale(self, frame_width: int, frame_height: int) -> tuple[float, float]:
        """(sx, sy): frame pixels per model-input pixel."""
        width, height = self.input_size
        return frame_width / width, frame_height / height

    def row_col(self, index) -> tuple[np.ndarray, np.ndarray]:
        index = np.asarray(index)
        if np.any(index < 0) or np.any(index >= self.count):
            raise IndexError(f"patch index out of range 0..{self.count - 1}")
        return index // self.cols, index % self.cols

    def centres(self, index) -> np.ndarray:
        """Patch centres in model-input pixels, (n, 2) as (x, y)."""
        rows, cols = self.row_col(np.atleast_1d(index))
        return np.stack([cols * self.patch + self.patch / 2, rows * self.patch + self.patch / 2], axis=1).astype(
            np.float64
        )

    def model_to_frame(self, xy, frame_width: int, frame_height: int) -> np.ndarray:
        """Model-input pixel coordinates (…, 2) as (x, y) → frame pixel coordinates."""
        sx, sy = self.scale(frame_width, frame_height)
        xy = np.asarray(xy, dtype=np.float64)
        return xy * np.array([sx, sy])

    def frame_to_model(self, xy, frame_width: int, frame_height: int) -> np.ndarray:
        sx, sy = self.scale(frame_width, frame_height)
        return np.asarray(xy, dtype=np.float64) / np.array([sx, sy])

    def patch_box(self, index: int, frame_width: int, frame_height: int) -> tuple[float, float, float, float]:
        """The frame rectangle (x0, y0, x1, y1) a patch covers, in continuous frame pixel coordinates."""
        row, col = (int(v) for v in self.row_col(index))
        sx, sy = self.scale(frame_width, frame_height)
        p = self.patch
        return col * p * sx, row * p * sy, (col + 1) * p * sx, (row + 1) * p * sy

    def patch_centres_in_frame(self, index, frame_width: int, frame_height: int) -> np.ndarray:
        """Patch centres in frame pixels, (n, 2) as (x, y)."""
        return self.model_to_frame(self.centres(index), frame_width, frame_height)

    def coverage(self, mask: np.ndarray) -> np.ndarray:
        """Fraction (0..1) of each patch's frame rectangle that a boolean frame-sized mask covers, (count,).

        An area average (OpenCV INTER_AREA) of the mask down to the grid: exact for any frame size."""
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise InputError(f"a mask must be 2-D, got shape {mask.shape}")
        height, width = mask.shape
        values = mask.astype(np.float32)
        if width >= self.cols and height >= self.rows:
            small = cv2.resize(values, (self.cols, self.rows), interpolation=cv2.INTER_AREA)
        else:  # a frame smaller than the grid: sample each patch's centre
            xy = self.patch_centres_in_frame(np.arange(self.count), width, height)
            xs = np.clip(np.floor(xy[:, 0]).astype(int), 0, width - 1)
            ys = np.clip(np.floor(xy[:, 1]).astype(int), 0, height - 1)
            small = values[ys, xs].reshape(self.rows, self.cols)
        return np.clip(small.reshape(-1), 0.0, 1.0)


@dataclass
class FrameFeatures:
    """Features of one frame: patch tokens (count, dim) and their mean, both float32."""

    local: np.ndarray
    global_: np.ndarray


def check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"a frame must be uint8 (H, W, 3) RGB, got {frame.dtype} {frame.shape}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise InputError(f"a frame of {frame.shape[1]}×{frame.shape[0]} pixels is too small")
    return frame


def resize_to_grid(frame: np.ndarray, grid: PatchGrid) -> np.ndarray:
    """The whole frame resized to the model input size (area averaging when shrinking), uint8 (h, w, 3)."""
    frame = check_frame(frame)
    width, height = grid.input_size
    shrinking = frame.shape[0] * frame.shape[1] >= width * height
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def prepare_image(frame: np.ndarray, grid: PatchGrid, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 (3, rows·P, cols·P): the resized frame in [0, 1], normalised per channel."""
    resized = resize_to_grid(frame, grid).astype(np.float32) / 255.0
    normalised = (resized - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


class FeatureIdentity:
    """What both extractors say about themselves (bundle_id, name, kind, grid, dim set by each)."""

    def identity(self) -> dict:
        """What a database records about the features it holds, and checks a query extractor against."""
        return {
            "bundle_id": self.bundle_id,
            "name": self.name,
            "kind": self.kind,
            "grid": [self.grid.rows, self.grid.cols],
            "patch_size": self.grid.patch,
            "dim": self.dim,
        }


class BundleFeatureModel(FeatureIdentity, OnePartModel):
    """What the bundle-backed feature models share: opening (engine.runtime.opening), identity from the bundle,
    preprocessing, one-frame extract."""

    bundle: Bundle

    def describe(self) -> dict:
        return {**self.identity(), "path": str(self.bundle.root), "provider": self.provider}

    def prepare(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """float32 (B, 3, h, w): the frames resized whole to the grid and normalised."""
        return np.stack([prepare_image(f, self.grid, self.mean, self.std) for f in frames])

    def extract(self, frame: np.ndarray) -> FrameFeatures:
        return self.extract_batch([frame])[0]


class FeatureExtractor(BundleFeatureModel):
    """A "dinov2" bundle loaded in onnxruntime: ``extract(frame)`` → FrameFeatures."""

    kind = "dinov2"
    KIND = "dinov2"
    REFUSAL = 'a feature bundle ("dinov2"; make one with `main.py export-features`)'
    ROLE = "feature model"

    def __init__(self, bundle: Bundle, part):
        super().__init__(bundle, part)
        manifest = bundle.manifest
        rows, cols = (int(v) for v in manifest["grid"])
        self.grid = PatchGrid(rows, cols, int(manifest["patch_size"]))
        self.dim = int(manifest["hidden_size"])
        self.mean = [float(v) for v in manifest["image_mean"]]
        self.std = [float(v) for v in manifest["image_std"]]
        self.input_name = manifest.get("input_name", "pixel_values")
        self.output_name = manifest.get("output_name", "patch_tokens")

    @classmethod
    def signature(cls, manifest: dict) -> Signature:
        rows, cols = (int(v) for v in manifest["grid"])
        patch = int(manifest["patch_size"])
        input_name = manifest.get("input_name", "pixel_values")
        return {input_name: (None, 3, rows * patch, cols * patch)}, (manifest.get("output_name", "patch_tokens"),)

    def extract_batch(self, frames: Sequence[np.ndarray]) -> list[FrameFeatures]:
        if not frames:
            return []
        batch = self.prepare(frames)
        (tokens,) = self.part.run([self.output_name], {self.input_name: batch})
        tokens = np.asarray(tokens, dtype=np.float32)
        expected = (len(frames), self.grid.count, self.dim)
        if tokens.shape != expected:
            raise BundleError(self.part.path, f"gives patch tokens of shape {tokens.shape}, expected {expected}")
        return [FrameFeatures(local=t, global_=t.mean(axis=0)) for t in tokens]


class JudgeFeatureExtractor(BundleFeatureModel):
    """The polyp judge's encoder as the proposer's feature model (a "segmenter" bundle from `main.py train-judge`):
    its patch_features output, the deepest encoder level above the bottleneck (16 × 16 patches of 8 px, 128-d at
    the default 128² input), trained on colonoscopy — where a random-weight DINOv2 export is all a curator has.
    The frame is resized whole to the judge's input, as for DINOv2 (same PatchGrid geometry)."""

    kind = "judge"
    KIND = "segmenter"
    REFUSAL = 'a judge ("segmenter")'
    ROLE = "feature model"

    def __init__(self, bundle: Bundle, part):
        super().__init__(bundle, part)
        manifest = bundle.manifest
        rows, cols = (int(v) for v in manifest["patch_grid"])
        self.grid = PatchGrid(rows, cols, int(manifest["patch_size"]))
        self.dim = int(manifest["patch_dim"])
        self.mean = [float(v) for v in manifest["image_mean"]]
        self.std = [float(v) for v in manifest["image_std"]]
        self.input_name = manifest.get("input_name", "pixel_values")

    @classmethod
    def read(cls, source: BundleSource, verify_hashes: bool = True) -> Bundle:
        bundle = super().read(source, verify_hashes)
        if "patch_features" not in bundle.manifest.get("output_names", ()) or "patch_grid" not in bundle.manifest:
            raise BundleError(bundle.root / "bundle.json", "this judge has no patch_features output (exported before "
                                                           "they were added): export it again with train-judge")
        return bundle

    @classmethod
    def signature(cls, manifest: dict) -> Signature:
        side = int(manifest["image_size"][0])
        return {manifest.get("input_name", "pixel_values"): (None, 3, side, side)}, ("patch_features",)

    def extract_batch(self, frames: Sequence[np.ndarray]) -> list[FrameFeatures]:
        if not frames:
            return []
        batch = self.prepare(frames)
        (patches,) = self.part.run(["patch_features"], {self.input_name: batch})
        patches = np.asarray(patches, dtype=np.float32)  # (B, dim, rows, cols)
        expected = (len(frames), self.dim, self.grid.rows, self.grid.cols)
        if patches.shape != expected:
            raise BundleError(self.part.path, f"gives patch features of shape {patches.shape}, expected {expected}")
        local = np.ascontiguousarray(patches.reshape(len(frames), self.dim, -1).transpose(0, 2, 1))
        return [FrameFeatures(local=t, global_=t.mean(axis=0)) for t in local]


def open_feature_extractor(path: str | os.PathLike[str], provider: str = "auto", threads: int | None = None,
                           verify_hashes: bool = True):
    """The proposer's feature model from a bundle: a "dinov2" bundle, or a judge ("segmenter") for its patches.
    The bundle is read once, here, and handed to the model's opener."""
    bundle = read_bundle(path, verify_hashes=verify_hashes)
    opener = JudgeFeatureExtractor if bundle.kind == "segmenter" else FeatureExtractor
    return opener.from_bundle(bundle, provider=provider, threads=threads)


class MeanColourExtractor(FeatureIdentity):
    """A deterministic stand-in for FeatureExtractor: each patch's feature is its mean normalised colour.

    Same grid, preprocessing and interface as FeatureExtractor, no model: geometry (patch → pixel mapping,
    matching, clustering, boxes) can be checked exactly, since a patch matches the patch that looks the same."""

    kind = "mean-colour"

    def __init__(self, grid: PatchGrid = PatchGrid(16, 16, 14), mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225)):
        self.grid = grid
        self.dim = 3
        self.mean = list(mean)
        self.std = list(std)
        self.provider = "cpu"
        self.provider_note = None

    @property
    def bundle_id(self) -> str:
        return f"mean-colour-{self.grid.rows}x{self.grid.cols}-p{self.grid.patch}"

    @property
    def name(self) -> str:
        return "mean-colour stand-in"

    def describe(self) -> dict:
        return {**self.identity(), "path": None, "provider": "cpu"}

    def extract(self, frame: np.ndarray) -> FrameFeatures:
        image = prepare_image(frame, self.grid, self.mean, self.std)  # (3, rows·P, cols·P)
        p = self.grid.patch
        blocks = image.reshape(3, self.grid.rows, p, self.grid.cols, p).mean(axis=(2, 4))  # (3, rows, cols)
        local = np.ascontiguousarray(blocks.reshape(3, -1).T, dtype=np.float32)
        return FrameFeatures(local=local, global_=local.mean(axis=0))

    def extract_batch(self, frames: Sequence[np.ndarray]) -> list[FrameFeatures]:
        return [self.extract(f) for f in frames]


def default_features_bundle() -> Path:
    """The shipped demo feature bundle (random weights): exported_models/demo-dinov2."""
    from engine.bundle.format import bundles_folder

    return bundles_folder() / "demo-dinov2"
