"""Export the judge (engine.models.segmenter.JudgeNet) to a "segmenter" bundle.

    bundle.json   kind "segmenter": image size, normalisation, threshold, embedding size, what it was trained
                  on (training section), provenance, parity
    model.onnx    pixel_values float32 (B, 3, S, S) → probability float32 (B, 1, S, S), embedding (B, D)

torch.onnx's TorchScript exporter (``dynamo=False``, opset 17, dynamic batch axis); then torch and
onnxruntime (CPU) run the same inputs — a seeded random batch and, when given, real frames — and the bundle
is **refused** if any output differs by more than ``atol + rtol·max|torch|``. The bundle is built beside its
destination and renamed into place (engine.fileio.staged_folder): a failed export leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.bundle.format import FORMAT_NAME, FORMAT_VERSION, write_manifest
from engine.errors import ExportError
from engine.export.onnx_export import (
    compare_to_torch,
    export_record,
    export_to_onnx,
    parity_session,
)
from engine.fileio import staged_folder
from engine.judge.preprocess import IMAGE_MEAN, IMAGE_STD
from engine.judge.scores import DEFAULT_THRESHOLD

Log = Callable[[str], None]
INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("probability", "embedding", "patch_features")
DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = (1e-4, 1e-3)  # (atol, rtol), fp32


def check_parity(module, onnx_path: Path, inputs: np.ndarray, tolerance=DEFAULT_TOLERANCE, log: Log = print) -> dict:
    """torch vs onnxruntime on `inputs` (B, 3, S, S); ExportError naming the output that disagrees."""
    import torch

    atol, rtol = tolerance
    with torch.no_grad():
        expected = [t.float().numpy() for t in module(torch.from_numpy(inputs))]
    session = parity_session(onnx_path)
    actual = session.run(list(OUTPUT_NAMES), {INPUT_NAME: inputs.astype(np.float32)})
    del session
    outputs = {name: compare_to_torch(got, want, tolerance, onnx_path, log, name)
               for name, want, got in zip(OUTPUT_NAMES, expected, actual)}
    return {"atol": atol, "rtol": rtol, "inputs": int(inputs.shape[0]), "outputs": outputs}


def export_segmenter_bundle(net, destination: str | Path, size: int, name: str | None = None,
                            description: str = "", training: dict | None = None, parity_frames: np.ndarray | None = None,
                            overwrite: bool = False, opset: int = DEFAULT_OPSET, tolerance=DEFAULT_TOLERANCE,
                            extra: dict | None = None, log: Log = print) -> dict:
    """Write `net` (a JudgeNet, eval mode is set here) as a segmenter bundle; returns its bundle.json.

    `parity_frames`: optional normalised real inputs (B, 3, size, size) checked besides the random batch."""
    import torch

    from engine.models.segmenter import Exported, parameter_count

    started = time.perf_counter()
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not overwrite and any(destination.iterdir()):
        raise ExportError(f"{destination}: already exists (pass --overwrite to replace it)")
    if size % net.size_step:
        raise ExportError(f"size {size} is not a multiple of the network's size step {net.size_step}")
    module = Exported(net.eval()).eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, size, size, generator=generator)
    with staged_folder(destination) as staging:
        bundle = staging.result
        bundle.mkdir(parents=True)
        onnx_path = bundle / "model.onnx"
        log(f"exporting the judge ({parameter_count(net) / 1e6:.2f} M parameters, {size}×{size}) with torch.onnx, "
            f"opset {opset}")
        export_to_onnx(module, (example,), onnx_path, [INPUT_NAME], list(OUTPUT_NAMES),
                       {INPUT_NAME: {0: "batch_size"}, **{n: {0: "batch_size"} for n in OUTPUT_NAMES}}, opset)
        checks = torch.randn(3, 3, size, size, generator=generator).numpy()
        if parity_frames is not None and len(parity_frames):
            checks = np.concatenate([checks, np.asarray(parity_frames, np.float32)])
        parity = check_parity(module, onnx_path, checks, tolerance, log)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": "segmenter",
            "name": name or destination.name,
            "description": description,
            "precision": "fp32",
            "image_size": [size, size],
            "image_mean": list(IMAGE_MEAN),
            "image_std": list(IMAGE_STD),
            "input_name": INPUT_NAME,
            "output_names": list(OUTPUT_NAMES),
            "threshold": DEFAULT_THRESHOLD,
            "embedding_dim": int(net.widths[-1]),
            # patch_features (B, patch_dim, grid, grid): the retrieval proposer's local features (--features judge)
            "patch_grid": [net.patch_grid(size)[0]] * 2,
            "patch_size": net.patch_grid(size)[1],
            "patch_dim": int(net.widths[-2]),
            "architecture": {"name": "JudgeNet (compact U-Net)", "widths": list(net.widths),
                             "parameters": parameter_count(net)},
            "training": training or {},
            "source": export_record(opset),
            "parity": parity,
            **(extra or {}),
        }
        write_manifest(bundle, manifest)
    log(f"wrote {destination} ({time.perf_counter() - started:.1f} s)")
    return manifest
