"""Image folders → one global feature vector per image, streamed in batches (memory flat in N).

Which images: a PolypForge output (a folder with ``manifest.jsonl``) gives its ``ok`` variants, each with its
manifest record (mask source, mode, bundle, source frame) for the per-source breakdown; a folder with an
``images/`` subfolder (Kvasir-SEG, Ultralytics) gives what is under ``images/``; any other folder gives every
frame file under it, except those under ``masks/``, ``labels/`` and ``rejected/``.

Feature models (anything with ``extract_batch(frames) -> [FrameFeatures]``, ``name``, ``bundle_id``,
``describe()``):

- a "dinov2" bundle (``engine.retrieval.features.FeatureExtractor``), the default: ``exported_models/demo-dinov2``
  (RANDOM weights: the numbers only show the machinery works) or a real ViT-B/14 made with ``export-features``;
  FD on DINOv2 features tracks human judgement better than Inception FID (Stein et al. 2023);
- an "inception" bundle (``InceptionExtractor``): a local folder with ``bundle.json`` (kind "inception",
  ``image_size``, ``image_mean``/``image_std``, ``input_name``/``output_name``, ``files``) and ``model.onnx``
  taking (N, 3, H, W) float32 and giving (N, D) pooled features (2048 for the FID network). Nothing is
  downloaded: "inception" without a folder is refused with a message saying what to supply;
- a "segmenter" bundle, the polyp judge (``engine.judge.model.JudgeFeatures``; ``--features judge`` is
  exported_models/polyp-judge): the encoder's bottleneck averaged over space, features trained on
  colonoscopy frames, so the distances mean something about colonoscopy when no DINOv2 export is at hand.

Only ``batch_size`` decoded frames exist at a time; the features themselves, (N, D) float32, are kept (KID,
t-SNE and nearest neighbours need them; 10 000 frames × 768 dims is 30 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.errors import BundleError, InputError
from engine.retrieval.features import FrameFeatures, check_frame
from engine.runtime.opening import OnePartModel, Signature

SKIPPED_FOLDERS = {"masks", "labels", "rejected", "annotations", "yolo-seg"}
DEFAULT_BATCH = 16


@dataclass
class ImageItem:
    """One image of a set: its path, and for a PolypForge output its manifest record."""

    path: Path
    record: dict | None = None

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ImageSet:
    root: Path
    items: list[ImageItem]
    polypforge: bool = False  # a PolypForge output read through its manifest
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def _frame_files(folder: Path) -> list[Path]:
    from engine.dataset.image_reader import is_frame_file

    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d.lower() not in SKIPPED_FOLDERS and not d.startswith("."))
        found += [Path(dirpath) / name for name in sorted(filenames) if is_frame_file(Path(name))]
    return found


def list_images(folder: str | os.PathLike[str]) -> ImageSet:
    """The images of a folder (see the module docstring); InputError when there is none."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    manifest = root / "manifest.jsonl"
    if manifest.is_file():
        from engine.dataset.manifest import Manifest

        records, damaged = Manifest(root).load()
        items, missing = [], 0
        for record in records:
            if record.get("status") != "ok" or not record.get("image"):
                continue
            path = root / record["image"]
            if path.is_file():
                items.append(ImageItem(path, record))
            else:
                missing += 1
        image_set = ImageSet(root, items, polypforge=True)
        if damaged:
            image_set.notes.append(f"{manifest}: {damaged} damaged line(s) skipped")
        if missing:
            image_set.notes.append(f"{manifest}: {missing} ok variant(s) whose image is missing were left out")
        skipped = sum(1 for r in records if r.get("status") != "ok")
        if skipped:
            image_set.notes.append(f"{manifest}: {skipped} variant(s) not ok (failed, skipped, rejected) left out")
    else:
        base = root / "images" if (root / "images").is_dir() else root
        image_set = ImageSet(root, [ImageItem(p) for p in _frame_files(base)])
    if not image_set.items:
        raise InputError(f"{root}: no images found (jpg/jpeg/png/bmp/tif)")
    return image_set


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- models
INCEPTION_MODEL = "model.onnx"


@dataclass
class InceptionBundle:
    """A local "inception" bundle: bundle.json (kind "inception", files with their sha256) and model.onnx.
    Read here, not by engine.bundle, whose kinds are the generation and retrieval models."""

    root: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return "inception"

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.root.name))

    @property
    def bundle_id(self) -> str:
        from engine.bundle.format import bundle_digest

        return bundle_digest(self.manifest["files"])

    def path_of(self, role: str) -> Path:
        return self.root / INCEPTION_MODEL


def read_inception_bundle(path: str | os.PathLike[str]) -> InceptionBundle:
    root = Path(path)
    manifest_path = root / "bundle.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(manifest_path, "missing: an Inception bundle is a folder with bundle.json and "
                                         "model.onnx") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(manifest_path, f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "inception":
        raise BundleError(manifest_path, 'kind must be "inception"')
    files = manifest.get("files")
    if not isinstance(files, dict) or INCEPTION_MODEL not in files:
        raise BundleError(manifest_path, f"'files' must list {INCEPTION_MODEL} with its sha256")
    for rel, expected in files.items():
        file_path = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(manifest_path, f"file entry {rel!r} points outside the bundle")
        if not file_path.is_file():
            raise BundleError(file_path, "missing from the bundle (bundle.json lists it)")
        actual = sha256_of(file_path)
        if actual != expected:
            raise BundleError(file_path, f"sha256 mismatch: bundle.json records {str(expected)[:12]}…, the file "
                                         f"has {actual[:12]}… (altered or only partly copied)")
    return InceptionBundle(root.resolve(), manifest)


def _bundle_kind(path: Path) -> str | None:
    try:
        return json.loads((path / "bundle.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None  # read_bundle says what is wrong

class InceptionExtractor(OnePartModel):
    """A local "inception" bundle in onnxruntime: pooled features (N, D) of frames resized to image_size."""

    kind = "inception"
    ROLE = "Inception model"

    def __init__(self, bundle, part):
        super().__init__(bundle, part)
        manifest = bundle.manifest
        width, height = (int(v) for v in manifest.get("image_size", (299, 299)))
        self.input_size = (width, height)
        self.mean = np.asarray(manifest.get("image_mean", (0.5, 0.5, 0.5)), np.float32)
        self.std = np.asarray(manifest.get("image_std", (0.5, 0.5, 0.5)), np.float32)
        self.input_name = manifest.get("input_name", "images")
        self.output_name = manifest.get("output_name", "features")
        self.dim = int(manifest.get("feature_dim", 2048))

    @classmethod
    def read(cls, source, verify_hashes: bool = True) -> InceptionBundle:
        """An Inception bundle is read here (every file's sha256 checked), not by engine.bundle."""
        return read_inception_bundle(source)

    @classmethod
    def signature(cls, manifest: dict) -> Signature:
        width, height = (int(v) for v in manifest.get("image_size", (299, 299)))
        return {manifest.get("input_name", "images"): (None, 3, height, width)}, (manifest.get("output_name", "features"),)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "bundle_id": self.bundle_id, "dim": self.dim,
                "path": str(self.bundle.root), "provider": self.provider}

    def extract_batch(self, frames: Sequence[np.ndarray]) -> list[FrameFeatures]:
        if not frames:
            return []
        prepared = []
        for frame in frames:
            frame = check_frame(frame)
            resized = cv2.resize(frame, self.input_size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
            prepared.append(((resized - self.mean) / self.std).transpose(2, 0, 1))
        (out,) = self.part.run([self.output_name], {self.input_name: np.ascontiguousarray(np.stack(prepared))})
        out = np.asarray(out, dtype=np.float32).reshape(len(frames), -1)
        return [FrameFeatures(local=row[None, :], global_=row) for row in out]


def load_feature_model(features: str | os.PathLike[str] | None = None, provider: str = "auto",
                       threads: int | None = None, log: Callable[[str], None] | None = None):
    """The feature model a report uses: None → exported_models/demo-dinov2; a bundle name or folder of kind
    "dinov2" or "inception". The word "inception" alone is refused: Inception weights are never downloaded."""
    from engine.bundle import read_bundle
    from engine.bundle.format import find_bundle
    from engine.retrieval.features import FeatureExtractor, default_features_bundle

    if features is not None and str(features).strip().lower() in ("inception", "inception-v3", "fid"):
        path = Path(str(features))
        if not (path / "bundle.json").is_file():
            raise InputError(
                f"--features {features}: Inception features need a local Inception bundle folder (bundle.json of "
                "kind \"inception\" + model.onnx giving pooled (N, 2048) features); nothing is downloaded. Give its "
                "path, or leave --features out to use the DINOv2 bundle")
    if features is not None and str(features).strip().lower() == "judge" and not Path(str(features)).exists():
        from engine.judge.model import default_judge_bundle

        features = default_judge_bundle()
    path = default_features_bundle() if features is None else find_bundle(features)
    kind = _bundle_kind(Path(path))
    if kind == "inception":
        extractor = InceptionExtractor.from_bundle(path, provider=provider, threads=threads)
    elif kind == "segmenter":
        from engine.judge.model import Judge, JudgeFeatures

        extractor = JudgeFeatures(Judge.from_bundle(path, provider=provider, threads=threads))
    else:
        bundle = read_bundle(path)
        if bundle.kind != "dinov2":
            raise BundleError(bundle.root / "bundle.json",
                              f"kind {bundle.kind!r} is not a feature bundle (\"dinov2\", \"inception\" or a "
                              "\"segmenter\" judge)")
        extractor = FeatureExtractor.from_bundle(path, provider=provider, threads=threads)
    if log is not None:
        if getattr(extractor, "provider_note", None):
            log(extractor.provider_note)
        if extractor.bundle.manifest.get("random_weights"):
            log(f"features: {extractor.name} has RANDOM weights: the numbers show the machinery works and "
                "mean nothing about image quality (export the real DINOv2 ViT-B/14 with `main.py export-features`)")
    return extractor


def random_weights(extractor) -> bool:
    bundle = getattr(extractor, "bundle", None)
    return bool(bundle is not None and bundle.manifest.get("random_weights"))


def describe_model(extractor) -> dict:
    try:
        info = dict(extractor.describe())
    except Exception:  # noqa: BLE001 - a stand-in without describe()
        info = {"name": getattr(extractor, "name", type(extractor).__name__)}
    info["random_weights"] = random_weights(extractor)
    return info


# ---------------------------------------------------------------------------------------------- streaming
def iter_batches(items: Sequence[ImageItem], batch_size: int) -> Iterable[list[ImageItem]]:
    for start in range(0, len(items), batch_size):
        yield list(items[start:start + batch_size])


def compute_features(items: Sequence[ImageItem], extractor, batch_size: int = DEFAULT_BATCH,
                     progress: Callable[[int], None] | None = None,
                     cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """(N, D) float32 global features, reading and extracting `batch_size` frames at a time.

    ``progress(n)`` is called after each batch with the number of frames it held. A frame that cannot be read
    raises InputError naming it."""
    from engine.dataset.image_reader import read_frame
    from engine.errors import Cancelled

    if batch_size < 1:
        raise InputError(f"batch size {batch_size} must be at least 1")
    rows: list[np.ndarray] = []
    for batch in iter_batches(items, batch_size):
        if cancelled is not None and cancelled():
            raise Cancelled("quality report cancelled")
        frames = [read_frame(item.path) for item in batch]
        features = extractor.extract_batch(frames)
        del frames
        if len(features) != len(batch):
            raise InputError(f"feature model {getattr(extractor, 'name', '?')} gave {len(features)} features for "
                             f"{len(batch)} frames")
        rows.append(np.stack([np.asarray(f.global_, np.float32).reshape(-1) for f in features]))
        if progress is not None:
            progress(len(batch))
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(rows, axis=0)


def dumps(data) -> bytes:
    return (json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
