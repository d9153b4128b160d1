"""Export a local diffusers StableDiffusionInpaintPipeline folder to a PolypForge "sd-inpaint" bundle.

Steps: check the source is an inpainting pipeline (9-channel U-Net) → export the four parts to ONNX with
optimum's exporter (torch.onnx's TorchScript exporter when optimum is missing or fails, or on request) →
optionally convert weights to fp16 (inputs/outputs stay fp32) → run every part in torch and in onnxruntime on
the same random input and refuse the bundle if they disagree → write tokenizer.json and bundle.json (sizes,
VAE factors, scheduler config, default prompts and sampling, sha256 per file, provenance, parity errors).

Everything is written into a temporary folder beside the destination and renamed into place at the end, so a
failed or killed export never leaves a half bundle under the destination name.

torch, diffusers, transformers and optimum are imported here only: this is not the inference path.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine import __version__ as engine_version
from engine.bundle.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    REQUIRED_FILES,
    write_manifest,
)
from engine.errors import ExportError
from engine.export.onnx_export import (
    compare_to_torch,
    consolidate_external_data,
    export_to_onnx,
    parity_session,
)
from engine.fileio import staged_folder

PARTS = ("text_encoder", "unet", "vae_encoder", "vae_decoder")
EXPORTERS = ("auto", "optimum", "torch")
# (atol, rtol) on max |onnx - torch| ≤ atol + rtol · max |torch|
TOLERANCE = {"fp32": (1e-4, 1e-3), "fp16": (2e-2, 2e-2)}

Log = Callable[[str], None]


@dataclass
class ExportReport:
    bundle_dir: Path
    exporter: str
    precision: str
    parity: dict[str, dict[str, float]]
    seconds: float


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path}: missing (not a diffusers pipeline folder?)") from None
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def check_source(source: Path) -> dict:
    """The source folder's component configs; ExportError naming the file when it is not SD inpainting."""
    if not source.is_dir():
        raise ExportError(f"{source}: no such folder")
    index = _read_json(source / "model_index.json")
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if component not in index:
            raise ExportError(f"{source / 'model_index.json'}: lists no {component!r} component")
    unet_config = _read_json(source / "unet" / "config.json")
    vae_config = _read_json(source / "vae" / "config.json")
    text_config = _read_json(source / "text_encoder" / "config.json")
    scheduler_config = _read_json(source / "scheduler" / "scheduler_config.json")
    channels = int(vae_config.get("latent_channels", 4))
    in_channels = unet_config.get("in_channels")
    if in_channels != 2 * channels + 1:
        raise ExportError(
            f"{source / 'unet' / 'config.json'}: the U-Net takes {in_channels} input channels; an inpainting "
            f"pipeline's takes {2 * channels + 1} (noisy latents + masked-image latents + mask). "
            "This looks like a text-to-image model: export a StableDiffusionInpaintPipeline folder."
        )
    return {
        "index": index,
        "unet": unet_config,
        "vae": vae_config,
        "text_encoder": text_config,
        "scheduler": scheduler_config,
    }


# ---------------------------------------------------------------------------------------------- exporters
def _export_with_optimum(source: Path, out: Path, opset: int | None, log: Log) -> str:
    from importlib.metadata import version

    import optimum.exporters.onnx as optimum_onnx  # noqa: F401  (import error → fallback)
    from optimum.exporters.onnx import main_export

    log("exporting with optimum's ONNX exporter")
    main_export(
        str(source),
        output=str(out),
        task="inpainting",
        library_name="diffusers",
        opset=opset,
        device="cpu",
        do_validation=False,  # we check parity ourselves, per part, with stated tolerances
    )
    return f"optimum-onnx {version('optimum-onnx')}"


def _torch_modules(source: Path):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    class TextEncoderPart(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids):
            return self.model(input_ids=input_ids, return_dict=False)[0]

    class UNetPart(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.model(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    class VaeEncoderPart(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, sample):
            return self.model.encode(sample, return_dict=False)[0].parameters

    class VaeDecoderPart(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, latent_sample):
            return self.model.decode(latent_sample, return_dict=False)[0]

    kwargs = {"local_files_only": True}
    text = CLIPTextModel.from_pretrained(str(source / "text_encoder"), **kwargs).eval()
    unet = UNet2DConditionModel.from_pretrained(str(source / "unet"), **kwargs).eval()
    vae = AutoencoderKL.from_pretrained(str(source / "vae"), **kwargs).eval()
    return {
        "text_encoder": TextEncoderPart(text).eval(),
        "unet": UNetPart(unet).eval(),
        "vae_encoder": VaeEncoderPart(vae).eval(),
        "vae_decoder": VaeDecoderPart(vae).eval(),
    }


# name, inputs (name → dynamic axes), output name (and its dynamic axes)
SIGNATURES = {
    "text_encoder": ({"input_ids": {0: "batch_size", 1: "sequence_length"}}, ("last_hidden_state", {0: "batch_size", 1: "sequence_length"})),
    "unet": (
        {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "timestep": {},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
        },
        ("out_sample", {0: "batch_size", 2: "height", 3: "width"}),
    ),
    "vae_encoder": ({"sample": {0: "batch_size", 2: "sample_height", 3: "sample_width"}}, ("latent_parameters", {0: "batch_size", 2: "latent_height", 3: "latent_width"})),
    "vae_decoder": ({"latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"}}, ("sample", {0: "batch_size", 2: "sample_height", 3: "sample_width"})),
}


def _example_inputs(part: str, configs: dict, seed: int, pixels: int):
    """Random inputs for a part at batch 2 (classifier-free guidance's batch) and a small spatial size."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    latent_channels = int(configs["vae"].get("latent_channels", 4))
    scale = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
    latent = pixels // scale
    hidden = int(configs["text_encoder"]["hidden_size"])
    vocab = int(configs["text_encoder"]["vocab_size"])
    seq = int(configs["text_encoder"].get("max_position_embeddings", 77))
    if part == "text_encoder":
        return {"input_ids": torch.randint(0, vocab, (2, seq), generator=generator, dtype=torch.int64)}
    if part == "unet":
        return {
            "sample": torch.randn(2, 2 * latent_channels + 1, latent, latent, generator=generator),
            "timestep": torch.tensor(637.0),
            "encoder_hidden_states": torch.randn(2, seq, hidden, generator=generator),
        }
    if part == "vae_encoder":
        return {"sample": torch.rand(2, 3, pixels, pixels, generator=generator) * 2 - 1}
    return {"latent_sample": torch.randn(2, latent_channels, latent, latent, generator=generator)}


def _export_with_torch(source: Path, out: Path, configs: dict, opset: int | None, log: Log, pixels: int) -> str:
    import torch

    log("exporting with torch.onnx (TorchScript exporter)")
    modules = _torch_modules(source)
    for part, module in modules.items():
        inputs, (output_name, output_axes) = SIGNATURES[part]
        example = _example_inputs(part, configs, seed=0, pixels=pixels)
        export_to_onnx(module, tuple(example[name] for name in inputs), out / part / "model.onnx", list(inputs),
                       [output_name], {**{k: v for k, v in inputs.items() if v}, output_name: output_axes},
                       opset or 18, gather_external_data=True)
    return f"torch.onnx {torch.__version__}"


def _convert_to_fp16(model_path: Path) -> None:
    """fp16 weights and activations with fp32 inputs/outputs (onnxruntime's float16 converter)."""
    import onnx
    from onnxruntime.transformers.float16 import (
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )

    had_external_data = (model_path.parent / "model.onnx_data").exists()
    model = onnx.load(str(model_path), load_external_data=True)
    # Resize takes its roi/scales as float32 only: keep Resize, and the Constant nodes feeding those inputs,
    # in fp32 (the converter would otherwise turn those constants into fp16 and the graph becomes invalid).
    resize_params = {name for node in model.graph.node if node.op_type == "Resize" for name in node.input[1:]}
    constant_names = [
        node.name for node in model.graph.node if node.op_type == "Constant" and set(node.output) & resize_params
    ]
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        disable_shape_infer=True,
        op_block_list=DEFAULT_OP_BLOCK_LIST + ["Resize"],
        node_block_list=constant_names,
    )
    del model
    for path in model_path.parent.glob("model.onnx*"):
        path.unlink()
    if had_external_data:
        onnx.save_model(
            converted, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx_data"
        )
    else:
        onnx.save_model(converted, str(model_path))


# ---------------------------------------------------------------------------------------------- parity
def check_parity(source: Path, bundle_dir: Path, configs: dict, precision: str, pixels: int, log: Log) -> dict:
    """Run each part in torch and onnxruntime (CPU) on the same random input; ExportError if they disagree."""
    import numpy as np
    import torch

    modules = _torch_modules(source)
    results: dict[str, dict[str, float]] = {}
    for part, module in modules.items():
        example = _example_inputs(part, configs, seed=1, pixels=pixels)
        with torch.no_grad():
            expected = module(**example).float().numpy()
        onnx_path = bundle_dir / part / "model.onnx"
        session = parity_session(onnx_path)
        feeds = {}
        for arg in session.get_inputs():
            value = example[arg.name].numpy()
            if arg.type == "tensor(float)":
                value = value.astype(np.float32)
            elif arg.type == "tensor(int64)":
                value = value.astype(np.int64)
            elif arg.type == "tensor(int32)":
                value = value.astype(np.int32)
            feeds[arg.name] = value
        (actual,) = session.run([SIGNATURES[part][1][0]], feeds)
        del session
        results[part] = compare_to_torch(actual, expected, TOLERANCE[precision], onnx_path, log, part,
                                         f" at {precision}")
    return results


# ---------------------------------------------------------------------------------------------- bundle
def export_inpaint_bundle(
    source: str | Path,
    destination: str | Path,
    precision: str = "fp32",
    opset: int | None = None,
    exporter: str = "auto",
    name: str | None = None,
    description: str = "",
    sampling: dict | None = None,
    overwrite: bool = False,
    source_label: str | None = None,
    log: Log = print,
) -> ExportReport:
    """Export `source` to a bundle at `destination`; `source_label` replaces the source path in provenance
    (e.g. for a bundle built from a temporary folder)."""
    import time

    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # export reads local folders only; never reach for a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    source = Path(source).expanduser().resolve()
    destination = Path(destination).expanduser().resolve()
    if precision not in TOLERANCE:
        raise ExportError(f"precision {precision!r} is not one of {', '.join(TOLERANCE)}")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination}: already exists (pass --overwrite to replace it)")
    configs = check_source(source)
    vae_scale = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
    size_multiple = vae_scale * 2 ** (len(configs["unet"]["block_out_channels"]) - 1)
    if precision == "fp16":
        log("fp16 bundles are for GPUs (CUDA/TensorRT): on a CPU they run slower than fp32, not faster")

    with staged_folder(destination) as staging:
        raw = staging.work / "onnx"
        used = None
        if exporter in ("auto", "optimum"):
            try:
                used = _export_with_optimum(source, raw, opset, log)
            except Exception as exc:  # optimum missing, or its exporter failed on this model
                if exporter == "optimum":
                    raise ExportError(f"optimum could not export {source}: {exc}") from exc
                log(f"optimum's exporter failed ({type(exc).__name__}: {exc}); falling back to torch.onnx")
                shutil.rmtree(raw, ignore_errors=True)
        if used is None:
            used = _export_with_torch(source, raw, configs, opset, log, pixels=4 * size_multiple)

        bundle = staging.result
        for part in PARTS:
            (bundle / part).mkdir(parents=True)
            for file in (raw / part).iterdir():
                if file.name.startswith("model.onnx") or file.name == "config.json":
                    shutil.move(str(file), bundle / part / file.name)
            consolidate_external_data(bundle / part / "model.onnx")
            if precision == "fp16":
                log(f"converting {part} to fp16")
                _convert_to_fp16(bundle / part / "model.onnx")
        tokenizer_info = _write_tokenizer(source, bundle / "tokenizer")
        parity = check_parity(source, bundle, configs, precision, pixels=4 * size_multiple, log=log)

        manifest = {
            **sd_manifest_fields(configs, "sd-inpaint", name or destination.name, description, precision,
                                 tokenizer_info),
            "sampling": sampling or {"scheduler": "ddim", "steps": 50, "guidance_scale": 7.5},
            "prompts": {"add": "Polyp", "remove": "Normal", "negative": ""},
            "source": source_provenance(configs, source_label or str(source), used, opset or 18),
            "parity": parity,
        }
        finish_bundle(bundle, manifest)
    seconds = time.perf_counter() - started
    log(f"bundle written to {destination} in {seconds:.1f} s")
    return ExportReport(destination, used, precision, parity, seconds)


def sd_manifest_fields(configs: dict, kind: str, name: str, description: str, precision: str,
                       tokenizer_info: dict) -> dict:
    """bundle.json fields every Stable-Diffusion-family bundle has, read from the source's configs."""
    vae_scale = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "description": description,
        "precision": precision,
        "image_size": int(configs["unet"]["sample_size"]) * vae_scale,
        "size_multiple": vae_scale * 2 ** (len(configs["unet"]["block_out_channels"]) - 1),
        "vae_scale_factor": vae_scale,
        "vae_scaling_factor": float(configs["vae"].get("scaling_factor", 0.18215)),
        "latent_channels": int(configs["vae"].get("latent_channels", 4)),
        "unet_in_channels": int(configs["unet"]["in_channels"]),
        "text_hidden_size": int(configs["text_encoder"]["hidden_size"]),
        "tokenizer": tokenizer_info,
        "scheduler": dict(configs["scheduler"]),
    }


def source_provenance(configs: dict, source: str, exporter: str, opset: int, **extra) -> dict:
    """Where a bundle came from: the source folder, its pipeline class, the exporter and package versions."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {
        "path": source,
        **extra,
        "pipeline_class": configs["index"].get("_class_name"),
        "diffusers_version": configs["index"].get("_diffusers_version"),
        "exporter": exporter,
        "opset": opset,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "exported_by": f"PolypForge {engine_version}",
        "versions": {pkg: installed(pkg) for pkg in ("torch", "diffusers", "transformers", "onnx", "onnxruntime")},
    }


def finish_bundle(bundle: Path, manifest: dict) -> None:
    """Check every required file of the bundle's kind exists, then hash them all into bundle.json."""
    for rel in REQUIRED_FILES[manifest["kind"]].values():
        if not (bundle / rel).is_file():
            raise ExportError(f"{bundle / rel}: the exporter did not produce it")
    write_manifest(bundle, {**manifest, "files": {}})


def _write_tokenizer(source: Path, folder: Path) -> dict:
    """tokenizer.json (the fast CLIP tokenizer built from the source's local vocab/merges) + the ids we need."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    tokenizer_dir = source / "tokenizer"
    try:
        fast = CLIPTokenizerFast.from_pretrained(str(tokenizer_dir), local_files_only=True)
        slow = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except Exception as exc:
        raise ExportError(f"{tokenizer_dir}: cannot read the CLIP tokenizer files ({exc})") from exc
    folder.mkdir(parents=True, exist_ok=True)
    fast.backend_tokenizer.save(str(folder / "tokenizer.json"))
    probe = "a small pale polyp"
    if fast(probe).input_ids != slow(probe).input_ids:
        raise ExportError(f"{tokenizer_dir}: the fast tokenizer disagrees with the slow one on {probe!r}")
    return {
        "max_length": int(slow.model_max_length),
        "pad_token_id": int(slow.pad_token_id),
        "bos_token_id": int(slow.bos_token_id),
        "eos_token_id": int(slow.eos_token_id),
    }
