"""Export a local transformers ``Dinov2Model`` folder to a PolypForge "dinov2" feature bundle.

The bundle is what the retrieval proposer (engine.retrieval) runs through onnxruntime::

    bundle.json   kind "dinov2": patch size, grid (rows, cols), hidden size, image mean/std, provenance, parity
    model.onnx    pixel_values float32 (B, 3, rows·P, cols·P) → patch_tokens float32 (B, rows·cols, hidden)

``patch_tokens`` is the last hidden state after DINOv2's final layer norm with the class token dropped — the
same tokens as the reference implementation's ``get_intermediate_layers(x)[0]`` that Polyp-Gen uses. The
input size is fixed by the grid (the batch axis is dynamic): DINOv2's position embeddings are interpolated
to that grid once, at export, exactly as torch does it for that input size (the released ViT-B/14 is trained
at 518 px = 37×37 patches; a 16×16 grid interpolates them to 16×16, which the parity check covers).

Steps: check the folder holds a Dinov2Model (config.json model_type "dinov2") → export with torch.onnx's
TorchScript exporter (``dynamo=False``, opset 17 by default) → run torch and onnxruntime (CPU) on the same
random batch and **refuse the bundle** if they differ by more than ``atol + rtol·max|torch|`` → write
bundle.json with sha256 per file. Everything is written in a temporary folder beside the destination and
renamed into place at the end (engine.fileio.staged_folder): a failed export leaves nothing behind.

``build_random_dinov2`` makes a tiny seeded random-weight Dinov2Model folder (hidden 32, 2 layers, patch 14)
for the tests and for the shipped demo feature bundle (exported_models/demo-dinov2): its features are random,
so what it retrieves is geometrically valid and semantically meaningless.

torch and transformers are imported here only: this is not the inference path.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.bundle.format import FORMAT_NAME, FORMAT_VERSION, write_manifest
from engine.errors import ExportError
from engine.export.onnx_export import (
    compare_to_torch,
    export_record,
    export_to_onnx,
    parity_session,
)
from engine.fileio import staged_folder

Log = Callable[[str], None]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_GRID = (16, 16)  # 224 × 224 model input at patch 14, DINOv2's usual evaluation size
DEFAULT_OPSET = 17
# (atol, rtol): max |onnx - torch| ≤ atol + rtol · max |torch|  (fp32)
DEFAULT_TOLERANCE = (1e-4, 1e-3)
INPUT_NAME = "pixel_values"
OUTPUT_NAME = "patch_tokens"


@dataclass
class Dinov2ExportReport:
    bundle_dir: Path
    parity: dict
    seconds: float


def _read_config(source: Path) -> dict:
    if not source.is_dir():
        raise ExportError(f"{source}: no such folder (expected a transformers Dinov2Model folder)")
    path = source / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path}: missing (not a transformers model folder?)") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if config.get("model_type") != "dinov2":
        raise ExportError(
            f"{path}: model_type is {config.get('model_type')!r}, expected 'dinov2' (a transformers Dinov2Model "
            "folder such as facebook/dinov2-base)"
        )
    return config


def _image_normalisation(source: Path) -> tuple[list[float], list[float]]:
    """Mean/std from the folder's preprocessor_config.json when there is one, else ImageNet's (DINOv2's)."""
    path = source / "preprocessor_config.json"
    if path.is_file():
        try:
            pre = json.loads(path.read_text(encoding="utf-8"))
            mean, std = pre.get("image_mean"), pre.get("image_std")
            if isinstance(mean, list) and isinstance(std, list) and len(mean) == 3 and len(std) == 3:
                return [float(v) for v in mean], [float(v) for v in std]
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            pass
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def _load_module(source: Path):
    import torch
    from transformers import Dinov2Model

    class PatchTokens(torch.nn.Module):
        """pixel_values → last hidden state (after the final layer norm) without the class token."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model(pixel_values=pixel_values).last_hidden_state[:, 1:, :]

    try:
        model = Dinov2Model.from_pretrained(str(source), local_files_only=True).eval()
    except (OSError, ValueError) as exc:
        raise ExportError(f"{source}: transformers cannot load a Dinov2Model from it ({exc})") from None
    return PatchTokens(model).eval()


def _random_input(batch: int, grid: tuple[int, int], patch: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    # ImageNet-normalised pixels of a natural image lie in about [-2.1, 2.6]
    return torch.rand(batch, 3, grid[0] * patch, grid[1] * patch, generator=generator) * 4.5 - 2.1


def check_parity(module, onnx_path: Path, grid: tuple[int, int], patch: int, tolerance: tuple[float, float],
                 log: Log) -> dict:
    """torch vs onnxruntime (CPU) on a random batch of 2; ExportError when they disagree beyond tolerance."""
    import numpy as np
    import torch

    example = _random_input(2, grid, patch, seed=1)
    with torch.no_grad():
        expected = module(example).float().numpy()
    session = parity_session(onnx_path)
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: example.numpy().astype(np.float32)})
    del session
    atol, rtol = tolerance
    return {**compare_to_torch(actual, expected, tolerance, onnx_path, log), "atol": atol, "rtol": rtol}


def export_dinov2_bundle(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    grid: tuple[int, int] = DEFAULT_GRID,
    opset: int = DEFAULT_OPSET,
    name: str | None = None,
    description: str = "",
    overwrite: bool = False,
    tolerance: tuple[float, float] = DEFAULT_TOLERANCE,
    source_label: str | None = None,
    extra: dict | None = None,
    log: Log = print,
) -> Dinov2ExportReport:
    """Export `source` (a local Dinov2Model folder) to a "dinov2" bundle at `destination`.

    `grid` is (rows, cols) of patches: the model input is rows·P × cols·P pixels. `tolerance` is
    (atol, rtol) of the parity check. `source_label` replaces the source path in provenance (a bundle built
    from a temporary folder). `extra` adds keys to bundle.json (e.g. {"random_weights": True})."""

    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    source = Path(source).expanduser().resolve()
    destination = Path(destination).expanduser().resolve()
    rows, cols = (int(grid[0]), int(grid[1]))
    if rows < 1 or cols < 1:
        raise ExportError(f"grid {rows}×{cols}: rows and columns must be ≥ 1")
    if opset < 17:
        raise ExportError(f"opset {opset}: 17 or newer is needed (LayerNormalization)")
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination}: already exists (pass --overwrite to replace it)")
    config = _read_config(source)
    patch = int(config.get("patch_size", 14))
    hidden = int(config["hidden_size"])
    mean, std = _image_normalisation(source)
    module = _load_module(source)

    with staged_folder(destination) as staging:
        bundle = staging.result
        bundle.mkdir(parents=True)
        onnx_path = bundle / "model.onnx"
        log(f"exporting {source.name} (hidden {hidden}, {config.get('num_hidden_layers')} layers, patch {patch}) "
            f"at a {rows}×{cols} grid ({rows * patch}×{cols * patch} px) with torch.onnx, opset {opset}")
        export_to_onnx(module, (_random_input(2, (rows, cols), patch, seed=0),), onnx_path, [INPUT_NAME], [OUTPUT_NAME],
                       {INPUT_NAME: {0: "batch_size"}, OUTPUT_NAME: {0: "batch_size"}}, opset)
        parity = check_parity(module, onnx_path, (rows, cols), patch, tolerance, log)

        from importlib.metadata import version

        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": "dinov2",
            "name": name or destination.name,
            "description": description,
            "precision": "fp32",
            "image_size": [rows * patch, cols * patch],  # model input (height, width)
            "patch_size": patch,
            "grid": [rows, cols],
            "hidden_size": hidden,
            "num_hidden_layers": int(config.get("num_hidden_layers", 0)),
            "image_mean": mean,
            "image_std": std,
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "features": "last hidden state after the final layer norm, class token dropped; global = mean",
            "source": export_record(opset, path=source_label or str(source), model_class="Dinov2Model",
                                    trained_image_size=config.get("image_size"),
                                    transformers_version=version("transformers")),
            "parity": parity,
            **(extra or {}),
        }
        write_manifest(bundle, manifest)
    seconds = time.perf_counter() - started
    log(f"wrote {destination} ({seconds:.1f} s)")
    return Dinov2ExportReport(bundle_dir=destination, parity=parity, seconds=seconds)


def build_random_dinov2(
    folder: str | os.PathLike[str],
    seed: int = 0,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    patch_size: int = 14,
    image_size: int = 224,
) -> Path:
    """A seeded random-weight transformers Dinov2Model folder (config.json + safetensors weights).

    `image_size` is the size the position embeddings are made for (the released models: 518); a grid of a
    different size makes the export interpolate them, as it does for the real ViT-B/14."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        mlp_ratio=4,
        patch_size=patch_size,
        image_size=image_size,
    )
    torch.manual_seed(seed)
    model = Dinov2Model(config).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}, indent=1) + "\n",
        encoding="utf-8",
    )
    return folder
