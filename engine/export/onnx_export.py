"""The one torch → ONNX call every exporter makes (inpainting parts, ControlNet parts, the compact model, the judge,
DINOv2): TorchScript-based ``torch.onnx.export`` under ``no_grad`` with constant folding, its tracer warnings
silenced (the parity check that follows every export is what tells whether the graph is right), and, for the
parts that can pass 2 GB (a full-size U-Net), their weights gathered into one ``model.onnx_data`` file beside the
graph instead of hundreds of files."""

from __future__ import annotations

import warnings
from pathlib import Path


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
