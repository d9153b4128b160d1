"""The one torch → ONNX call every exporter makes (inpainting parts, ControlNet parts, the compact model, the judge,
DINOv2): TorchScript-based ``torch.onnx.export`` under ``no_grad`` with constant folding, its tracer warnings
silenced (the parity check that follows every export is what tells whether the graph is right), and, for the
parts that can pass 2 GB (a full-size U-Net), their weights gathered into one ``model.onnx_data`` file beside the
graph instead of hundreds of files.

Then what every exporter does after: ``parity_session`` runs the exported file in onnxruntime on the CPU,
``compare_to_torch`` is the one parity comparison (onnxruntime's outputs against torch's on the same input, refused
beyond ``atol + rtol·max|torch|``), ``worst_parity`` sums up checks at several sizes, and ``export_record`` is the
manifest's provenance."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engine.errors import ExportError


def export_to_onnx(module, example_inputs: tuple, path: Path, input_names: list[str], output_names: list[str],
                   dynamic_axes: dict[str, dict[int, str]], opset: int, gather_external_data: bool = False) -> Path:
    """Trace ``module`` on ``example_inputs`` (positional, in ``input_names`` order) into ``path``.

    ``gather_external_data``: ``path`` sits in a folder of its own (every other file there but config.json is taken
    for a torch.onnx weight file)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, tuple(example_inputs), str(path), input_names=list(input_names), output_names=list(output_names),
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    if gather_external_data:
        consolidate_external_data(path)
    return path


def export_record(opset: int, **fields) -> dict:
    """The bundle manifest's ``source`` block for a model exported by :func:`export_to_onnx`: ``fields`` (where the
    weights came from, their class) then the exporter, opset, time, PolypForge version and the versions that made
    the graph, so a bundle says how it can be made again."""
    import datetime as _dt
    from importlib.metadata import version

    import torch

    from engine import __version__ as engine_version

    return {**fields, "exporter": f"torch.onnx {torch.__version__} (TorchScript, dynamo=False)", "opset": opset,
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "exported_by": f"PolypForge {engine_version}", "engine_version": engine_version,
            "versions": {"torch": torch.__version__, "onnx": version("onnx"), "onnxruntime": version("onnxruntime")}}


def parity_session(path: Path):
    """An onnxruntime session on the CPU for an exported file's parity check (onnxruntime logs errors only)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def compare_to_torch(actual: np.ndarray | Sequence[np.ndarray], expected: np.ndarray | Sequence[np.ndarray],
                     tolerance: tuple[float, float], onnx_path: Path, log: Callable[[str], None], what: str = "",
                     detail: str = "") -> dict:
    """The parity comparison every exporter makes: onnxruntime's output(s) ``actual`` against torch's ``expected``
    on the same input. ``what`` names the part or output (and size) in the log line and the error, ``detail`` adds
    to the allowance in the error (" at fp16").

    Logs the largest difference, the allowance ``atol + rtol·max|torch|`` and the largest torch output; raises
    ExportError naming ``onnx_path`` when a shape differs, or the difference is beyond the allowance or not finite
    ("the bundle was not written": every exporter builds its bundle in a staged folder). Returns the record a
    manifest keeps: max_abs_error, max_abs_value, allowed."""
    pairs = list(zip(actual, expected)) if isinstance(actual, (list, tuple)) else [(actual, expected)]
    for got, want in pairs:
        if got.shape != want.shape:
            named = f" {what} of" if what else ""
            raise ExportError(f"{onnx_path}: onnxruntime gives{named} shape {got.shape}, torch {want.shape}")
    error = max(float(np.max(np.abs(got.astype(np.float32) - want.astype(np.float32)))) for got, want in pairs)
    scale = max(float(np.max(np.abs(want.astype(np.float32)))) for _, want in pairs)
    atol, rtol = tolerance
    allowed = atol + rtol * scale
    log(f"parity{f' {what}' if what else ''}: max |onnx - torch| = {error:.3g} (allowed {allowed:.3g}, outputs up to "
        f"{scale:.3g})")
    if not np.isfinite(error) or error > allowed:
        raise ExportError(f"{onnx_path}: onnxruntime output differs from torch by {error:.3g}"
                          f"{f' in {what}' if what else ''} (allowed {allowed:.3g}{detail}); the bundle was not written")
    return {"max_abs_error": error, "max_abs_value": scale, "allowed": allowed}


def worst_parity(records: Sequence[dict]) -> dict:
    """The largest error and the largest torch output of one part's checks at several sizes."""
    return {"max_abs_error": max(r["max_abs_error"] for r in records),
            "max_abs_value": max(r["max_abs_value"] for r in records)}


def consolidate_external_data(model_path: Path) -> None:
    """Models over 2 GB come out of torch.onnx as hundreds of weight files: gather them into model.onnx_data."""
    model_path = Path(model_path)
    folder = model_path.parent
    stray = [p for p in folder.iterdir() if p.name not in (model_path.name, "model.onnx_data", "config.json")]
    if not stray:
        return
    import onnx

    model = onnx.load(str(model_path), load_external_data=True)
    for path in stray:
        path.unlink()
    onnx.save_model(
        model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx_data"
    )
