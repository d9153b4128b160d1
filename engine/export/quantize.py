"""An int8 copy of a bundle for CPUs: the U-Net's MatMul/Gemm weights dynamically quantised to int8.

Opt-in only, never the default: it trades exactness for speed. `tests/benchmarks/bench_inpaint.py` reports
both the speed-up and the deviation from the fp32 output (PSNR of the decoded image) on the same seed.
The text encoder and VAE stay fp32 (they run once per prompt/frame and the VAE is sensitive to rounding).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from engine.bundle import read_bundle, write_manifest
from engine.errors import ExportError
from engine.fileio import staged_folder

QUANTISED_OPS = ("MatMul", "Gemm")


def quantize_unet_int8(
    source_bundle: str | Path,
    destination: str | Path,
    overwrite: bool = False,
    ops: tuple[str, ...] = QUANTISED_OPS,
    log: Callable[[str], None] = print,
) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    bundle = read_bundle(source_bundle)
    if bundle.manifest["precision"] != "fp32":
        raise ExportError(f"{bundle.root}: int8 quantisation starts from an fp32 bundle, this one is {bundle.manifest['precision']}")
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination}: already exists (pass --overwrite to replace it)")
    with staged_folder(destination) as staging:
        staged = staging.result
        shutil.copytree(bundle.root, staged, ignore=shutil.ignore_patterns("unet"))
        (staged / "unet").mkdir()
        unet_source = bundle.root / "unet" / "model.onnx"
        large = (bundle.root / "unet" / "model.onnx_data").exists()
        log(f"quantising {unet_source} ({', '.join(ops)} weights → int8, dynamic activations)")
        quantize_dynamic(
            str(unet_source),
            str(staged / "unet" / "model.onnx"),
            op_types_to_quantize=list(ops),
            weight_type=QuantType.QInt8,
            per_channel=True,
            use_external_data_format=large,
        )
        if (bundle.root / "unet" / "config.json").exists():
            shutil.copy2(bundle.root / "unet" / "config.json", staged / "unet" / "config.json")
        manifest = json.loads((bundle.root / "bundle.json").read_text(encoding="utf-8"))
        manifest["precision"] = "int8-unet"
        manifest["name"] = destination.name
        manifest["description"] = (
            (manifest.get("description", "") + " ").lstrip()
            + f"U-Net {'/'.join(ops)} weights dynamically quantised to int8 for CPU speed; deviates from fp32."
        )
        manifest["source"] = {**manifest["source"], "quantised_from": bundle.bundle_id, "quantisation": {
            "method": "onnxruntime.quantization.quantize_dynamic",
            "ops": list(ops),
            "weight_type": "QInt8",
            "per_channel": True,
        }}
        manifest.pop("parity", None)
        write_manifest(staged, manifest)
    log(f"int8 bundle written to {destination}")
    return destination
