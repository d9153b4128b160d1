"""The model bundle: a folder of ONNX parts, tokenizer files and a bundle.json that describes and hashes them.

Layout of an "sd-inpaint" bundle::

    bundle.json
    text_encoder/model.onnx
    tokenizer/tokenizer.json
    unet/model.onnx (+ unet/model.onnx_data for weights over 2 GB)
    vae_encoder/model.onnx
    vae_decoder/model.onnx

An "sd-controlnet" bundle (CCIS-Diff, engine.pipelines.controlnet) holds text_encoder/, tokenizer/, unet/
(an SD-1.5 text-to-image U-Net taking the ControlNet residuals as inputs), controlnet/ (with its mask
branches) and vae_decoder/; its bundle.json adds a "controlnet" section.

A "pixel-inpaint" bundle (the compact model, engine.pipelines.compact) holds unet/ and, optionally, detail/ (the
detail stage: the region repainted at a larger working size from the base's result) with a "detail" section.

A "pixel-controlnet" bundle (a compact CCIS ControlNet on the compact model, engine.pipelines.compact_controlnet)
holds text_encoder/ (word ids → text tokens), tokenizer/vocab.json (the word vocabulary), controlnet/ (sample,
timestep, class label, text tokens → residuals) and unet/ (the compact U-Net taking the residuals as inputs);
its bundle.json adds a "controlnet" section, the class labels and the vocabulary's size.

A "dinov2" bundle (the retrieval proposer's feature extractor, engine.retrieval) is ``bundle.json`` +
``model.onnx``: pixel_values (B, 3, rows·P, cols·P) → patch tokens (B, rows·cols, dim).

A "segmenter" bundle (the polyp judge, engine.judge.model) is ``bundle.json`` + ``model.onnx``:
pixel_values (B, 3, S, S) → probability (B, 1, S, S) and embedding (B, D); bundle.json adds the threshold,
the normalisation, and what it was trained on (engine.export.segmenter_export).

``read_bundle`` checks that the manifest is well formed and that every file it lists exists with the sha256
it records; the ONNX signatures are checked when the sessions are created (engine.runtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.bundle.hashing import HashCache
from engine.errors import BundleError

MANIFEST_NAME = "bundle.json"
FORMAT_NAME = "polypforge-bundle"
FORMAT_VERSION = 1
KNOWN_KINDS = ("sd-inpaint", "dinov2", "sd-controlnet", "pixel-inpaint", "pixel-controlnet", "segmenter")

# Files every bundle of a kind must list, and the role each plays.
REQUIRED_FILES: dict[str, dict[str, str]] = {
    "sd-inpaint": {
        "text_encoder": "text_encoder/model.onnx",
        "unet": "unet/model.onnx",
        "vae_encoder": "vae_encoder/model.onnx",
        "vae_decoder": "vae_decoder/model.onnx",
        "tokenizer": "tokenizer/tokenizer.json",
    },
    # A DINOv2 feature extractor for the retrieval proposer (engine.retrieval): one ONNX model that maps
    # pixel_values (B, 3, rows·P, cols·P) to patch tokens (B, rows·cols, dim), class token dropped.
    "dinov2": {
        "model": "model.onnx",
    },
    # A ControlNet text-to-image bundle (CCIS-Diff, engine.pipelines.controlnet): the U-Net takes the
    # ControlNet's residuals as inputs; no VAE encoder (nothing is encoded from pixels).
    "sd-controlnet": {
        "text_encoder": "text_encoder/model.onnx",
        "controlnet": "controlnet/model.onnx",
        "unet": "unet/model.onnx",
        "vae_decoder": "vae_decoder/model.onnx",
        "tokenizer": "tokenizer/tokenizer.json",
    },
    # The compact pixel-space inpainting model (engine.pipelines.compact): one U-Net that sees pixels; the
    # prompts "Polyp" / "Normal" are class labels, not text.
    "pixel-inpaint": {
        "unet": "unet/model.onnx",
    },
    # The compact model + a compact CCIS ControlNet (engine.pipelines.compact_controlnet): a word-vocabulary text
    # encoder, the ControlNet (residuals from sample, class, text) and the compact U-Net taking them as inputs.
    "pixel-controlnet": {
        "text_encoder": "text_encoder/model.onnx",
        "controlnet": "controlnet/model.onnx",
        "unet": "unet/model.onnx",
        "vocab": "tokenizer/vocab.json",
    },
    # A polyp segmenter (the judge, engine.judge.model): pixel_values (B, 3, S, S) → probability
    # (B, 1, S, S) and embedding (B, D).
    "segmenter": {
        "model": "model.onnx",
    },
}

# Files a bundle of a kind may hold, the role each plays, and the manifest section that describes it (a bundle
# that lists the file must have the section). A pixel-inpaint bundle's "detail" part is the compact model's
# detail stage (engine.models.detail_unet): the region repainted at a larger working size from the base's result;
# bundles without it run as they always did.
OPTIONAL_FILES: dict[str, dict[str, str]] = {
    "pixel-inpaint": {
        "detail": "detail/model.onnx",
    },
}

REQUIRED_KEYS = (
    "format",
    "format_version",
    "kind",
    "name",
    "precision",
    "image_size",
    "size_multiple",
    "vae_scale_factor",
    "vae_scaling_factor",
    "latent_channels",
    "unet_in_channels",
    "text_hidden_size",
    "tokenizer",
    "scheduler",
    "sampling",
    "prompts",
    "files",
    "source",
)

# Keys each kind needs; a kind not listed here is checked against REQUIRED_KEYS (the "sd-inpaint" set).
REQUIRED_KEYS_BY_KIND: dict[str, tuple[str, ...]] = {
    "sd-inpaint": REQUIRED_KEYS,
    # + "controlnet": residual output names, conditioning channels, which CCIS-Diff additions are inside
    "sd-controlnet": REQUIRED_KEYS + ("controlnet",),
    "pixel-inpaint": (
        "format", "format_version", "kind", "name", "precision", "image_size", "size_multiple", "image_channels",
        "classes", "scheduler", "sampling", "prompts", "files", "source",
    ),
    "pixel-controlnet": (
        "format", "format_version", "kind", "name", "precision", "image_size", "size_multiple", "image_channels",
        "classes", "scheduler", "sampling", "prompts", "files", "source", "controlnet", "tokenizer",
        "text_hidden_size",
    ),
    "dinov2": (
        "format",
        "format_version",
        "kind",
        "name",
        "precision",
        "image_size",
        "patch_size",
        "grid",
        "hidden_size",
        "image_mean",
        "image_std",
        "files",
        "source",
    ),
    "segmenter": (
        "format",
        "format_version",
        "kind",
        "name",
        "precision",
        "image_size",
        "image_mean",
        "image_std",
        "threshold",
        "embedding_dim",
        "files",
        "source",
    ),
}


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: its folder and the parsed bundle.json."""

    root: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def bundle_id(self) -> str:
        """sha256 over the per-file hashes: one id that changes whenever any file of the bundle changes."""
        return bundle_digest(self.manifest["files"])

    def path_of(self, role: str) -> Path:
        parts = {**REQUIRED_FILES[self.kind], **OPTIONAL_FILES.get(self.kind, {})}
        return self.root / parts[role]

    def has_part(self, role: str) -> bool:
        """Whether the bundle holds the part ``role``: always for a required one, when listed for an optional one."""
        if role in REQUIRED_FILES[self.kind]:
            return True
        rel = OPTIONAL_FILES.get(self.kind, {}).get(role)
        return rel is not None and rel in self.manifest["files"]

    def size_bytes(self) -> int:
        return sum((self.root / rel).stat().st_size for rel in self.manifest["files"])

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": m["name"],
            "kind": m["kind"],
            "path": str(self.root),
            "precision": m["precision"],
            "image_size": m["image_size"],
            "size_bytes": self.size_bytes(),
            "bundle_id": self.bundle_id,
            "source": m["source"],
            "description": m.get("description", ""),
        }


def frozen_app_dir() -> Path | None:
    """The folder holding the built app's executable (PyInstaller, sys.frozen), or None in a source tree."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).resolve().parent
    return None


def shipped_bundles_folder() -> Path:
    """Where the demo bundles ship: exported_models/ in the source tree; in a built app the ``models`` folder
    next to the executable (where real bundles are installed too, so they survive an app update)."""
    app_dir = frozen_app_dir()
    return app_dir / "models" if app_dir else Path(__file__).resolve().parents[2] / "exported_models"


def bundles_folder() -> Path:
    """Where named bundles live: $POLYPFORGE_MODELS, else exported_models/ beside the engine (in a built
    app: <app dir>/models)."""
    override = os.environ.get("POLYPFORGE_MODELS")
    return Path(override) if override else shipped_bundles_folder()


def bundle_search_folders() -> list[Path]:
    """Every folder a bundle name is looked up in, first match wins: bundles_folder(); in a built app also
    <app dir>/models (when $POLYPFORGE_MODELS points elsewhere) and exported_models/ inside the app."""
    folders = [bundles_folder()]
    if frozen_app_dir() is not None:
        folders.append(shipped_bundles_folder())
        if getattr(sys, "_MEIPASS", None):
            folders.append(Path(sys._MEIPASS) / "exported_models")
    unique: list[Path] = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
    return unique


def find_bundle(name_or_path: str | os.PathLike[str]) -> Path:
    """A bundle given by path, or by name (a folder of the bundles folders); BundleError listing what exists."""
    path = Path(name_or_path).expanduser()
    if path.exists() or path.is_absolute() or len(path.parts) > 1:
        return path
    folders = bundle_search_folders()
    for folder in folders:
        candidate = folder / path
        if candidate.exists():
            return candidate
    known = sorted({p.parent.name for folder in folders for p in folder.glob("*/bundle.json")})
    where = ", ".join(str(folder) for folder in folders)
    raise BundleError(path, f"no such bundle folder, and no bundle of that name in {where} "
                            f"(there: {', '.join(known) or 'none'})")


def bundle_digest(files: dict[str, str]) -> str:
    text = "\n".join(f"{name} {digest}" for name, digest in sorted(files.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _load_manifest(root: Path) -> dict[str, Any]:
    manifest_path = root / MANIFEST_NAME
    if not root.exists():
        raise BundleError(root, "no such folder")
    if not root.is_dir():
        raise BundleError(root, "not a folder: a model bundle is a folder holding bundle.json")
    if not manifest_path.is_file():
        raise BundleError(
            manifest_path, "missing: this folder is not a PolypForge model bundle (make one with `main.py export`)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(manifest_path, f"not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BundleError(manifest_path, f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(manifest, dict):
        raise BundleError(manifest_path, "must hold a JSON object")
    required = REQUIRED_KEYS_BY_KIND.get(manifest.get("kind"), REQUIRED_KEYS)
    missing = [key for key in required if key not in manifest]
    if missing:
        raise BundleError(manifest_path, f"lacks the key(s) {', '.join(missing)}")
    if manifest["format"] != FORMAT_NAME:
        raise BundleError(manifest_path, f"format is {manifest['format']!r}, expected {FORMAT_NAME!r}")
    if not isinstance(manifest["format_version"], int) or manifest["format_version"] > FORMAT_VERSION:
        raise BundleError(
            manifest_path,
            f"format_version {manifest['format_version']!r} is newer than this PolypForge reads "
            f"({FORMAT_VERSION}): update PolypForge",
        )
    if manifest["kind"] not in KNOWN_KINDS:
        raise BundleError(manifest_path, f"kind {manifest['kind']!r} is not one of {', '.join(KNOWN_KINDS)}")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise BundleError(manifest_path, "'files' must map relative paths to sha256 hex digests")
    for role, rel in REQUIRED_FILES[manifest["kind"]].items():
        if rel not in files:
            raise BundleError(manifest_path, f"does not list {rel} (the {role}), which a {manifest['kind']} bundle needs")
    for role, rel in OPTIONAL_FILES.get(manifest["kind"], {}).items():
        if rel in files and not isinstance(manifest.get(role), dict):
            raise BundleError(manifest_path, f"lists {rel} (the {role} part) but has no {role!r} section describing it")
    return manifest


def read_bundle(path: str | os.PathLike[str], verify_hashes: bool = True) -> Bundle:
    """Read and check a bundle folder; raise BundleError naming the first file that is missing or altered."""
    root = find_bundle(path).resolve()
    manifest = _load_manifest(root)
    cache = HashCache() if verify_hashes else None
    for rel, expected in manifest["files"].items():
        file_path = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(root / MANIFEST_NAME, f"file entry {rel!r} points outside the bundle")
        if not file_path.is_file():
            raise BundleError(file_path, "missing from the bundle (bundle.json lists it)")
        if cache is not None:
            actual = cache.sha256(file_path)
            if actual != expected:
                raise BundleError(
                    file_path,
                    f"sha256 mismatch: bundle.json records {expected[:12]}…, the file has {actual[:12]}… "
                    "(the file was altered or only partly copied)",
                )
    if cache is not None:
        cache.save()
    return Bundle(root=root, manifest=manifest)


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Hash every file under root (but bundle.json) into manifest['files'] and write bundle.json atomically."""
    files: dict[str, str] = {}
    cache = HashCache()
    for file_path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file_path.relative_to(root).as_posix()
        if rel == MANIFEST_NAME or rel.startswith(".") or "/." in rel:
            continue
        files[rel] = cache.sha256(file_path)
    cache.save()
    manifest = dict(manifest)
    manifest["files"] = files
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".bundle-", suffix=".json.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(tmp, root / MANIFEST_NAME)
