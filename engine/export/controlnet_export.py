"""Export an SD-1.5 text-to-image folder + a (CCIS) ControlNet folder to an "sd-controlnet" bundle.

Parts: text encoder (input_ids → last_hidden_state); ControlNet (sample, timestep, encoder_hidden_states,
controlnet_cond → down_block_res_0…N-1, mid_block_res), its mask branches (Gaussian blur, second mask
encoder, weighting MLP) and text-aware attention inside the graph; U-Net (sample, timestep,
encoder_hidden_states, down_block_res_*, mid_block_res → out_sample) taking the ControlNet residuals as
inputs; VAE decoder. The conditioning scale is applied by the engine (the ControlNet is exported at scale 1).

Exported with torch.onnx (TorchScript exporter: optimum has no task for a U-Net with residual inputs), then
each part is run in torch and onnxruntime on the same random input and the bundle is refused beyond
engine.export.inpaint_export's tolerances. Written into a staged folder and renamed into place.
torch / diffusers are imported here only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from engine.errors import ExportError
from engine.export.inpaint_export import (
    TOLERANCE,
    ExportReport,
    Log,
    _convert_to_fp16,
    _read_json,
    _write_tokenizer,
    finish_bundle,
    sd_manifest_fields,
    source_provenance,
)
from engine.export.onnx_export import compare_to_torch, export_to_onnx, parity_session
from engine.fileio import staged_folder

PARTS = ("text_encoder", "controlnet", "unet", "vae_decoder")
KIND = "sd-controlnet"


def check_sources(source: Path, controlnet: Path) -> dict:
    """Configs of the SD folder and the ControlNet folder; ExportError naming the file when they do not fit."""
    if not source.is_dir():
        raise ExportError(f"{source}: no such folder")
    if not controlnet.is_dir():
        raise ExportError(f"{controlnet}: no such folder")
    index = _read_json(source / "model_index.json")
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if component not in index:
            raise ExportError(f"{source / 'model_index.json'}: lists no {component!r} component")
    configs = {
        "index": index,
        "unet": _read_json(source / "unet" / "config.json"),
        "vae": _read_json(source / "vae" / "config.json"),
        "text_encoder": _read_json(source / "text_encoder" / "config.json"),
        "scheduler": _read_json(source / "scheduler" / "scheduler_config.json"),
        "controlnet": _read_json(controlnet / "config.json"),
    }
    channels = int(configs["vae"].get("latent_channels", 4))
    if configs["unet"].get("in_channels") != channels:
        raise ExportError(
            f"{source / 'unet' / 'config.json'}: the U-Net takes {configs['unet'].get('in_channels')} input "
            f"channels; a ControlNet's base is a text-to-image U-Net taking {channels} (Stable Diffusion 1.5)"
        )
    cn = configs["controlnet"]
    if cn.get("_class_name") not in ("ControlNetModel", "CCISControlNetModel"):
        raise ExportError(f"{controlnet / 'config.json'}: _class_name {cn.get('_class_name')!r} is not a ControlNetModel")
    for key in ("block_out_channels", "cross_attention_dim", "layers_per_block", "down_block_types"):
        if list(cn.get(key) if isinstance(cn.get(key), list) else [cn.get(key)]) != list(
            configs["unet"].get(key) if isinstance(configs["unet"].get(key), list) else [configs["unet"].get(key)]
        ):
            raise ExportError(
                f"{controlnet / 'config.json'}: {key} is {cn.get(key)!r} but the U-Net's is "
                f"{configs['unet'].get(key)!r}: this ControlNet was not made for this Stable Diffusion"
            )
    return configs


def load_torch_models(source: Path, controlnet: Path):
    """(text encoder, U-Net, ControlNet, VAE) in eval mode; a CCIS folder loads as CCISControlNetModel."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel

    from engine.models.sd_controlnet import CCISControlNetModel

    kwargs = {"local_files_only": True}
    cn_class = _read_json(controlnet / "config.json").get("_class_name")
    cn_type = CCISControlNetModel if cn_class == "CCISControlNetModel" else ControlNetModel
    return (
        CLIPTextModel.from_pretrained(str(source / "text_encoder"), **kwargs).eval(),
        UNet2DConditionModel.from_pretrained(str(source / "unet"), **kwargs).eval(),
        cn_type.from_pretrained(str(controlnet), **kwargs).eval(),
        AutoencoderKL.from_pretrained(str(source / "vae"), **kwargs).eval(),
    )


def _wrappers(text, unet, controlnet, vae):
    import torch

    residuals = len(controlnet.controlnet_down_blocks)

    class TextEncoderPart(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = text

        def forward(self, input_ids):
            return text(input_ids=input_ids, return_dict=False)[0]

    class ControlNetPart(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = controlnet

        def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond):
            down, mid = controlnet(sample, timestep, encoder_hidden_states, controlnet_cond, return_dict=False)
            return (*down, mid)

    class UNetPart(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = unet

        def forward(self, sample, timestep, encoder_hidden_states, *res, **named):
            res = res or tuple(named[name] for name in residual_names(residuals))
            return unet(
                sample, timestep, encoder_hidden_states, down_block_additional_residuals=list(res[:-1]),
                mid_block_additional_residual=res[-1], return_dict=False,
            )[0]

    class VaeDecoderPart(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = vae

        def forward(self, latent_sample):
            return vae.decode(latent_sample, return_dict=False)[0]

    return {"text_encoder": TextEncoderPart(), "controlnet": ControlNetPart(), "unet": UNetPart(),
            "vae_decoder": VaeDecoderPart()}, residuals


def residual_names(count: int) -> list[str]:
    return [f"down_block_res_{i}" for i in range(count)] + ["mid_block_res"]


def _signatures(residuals: int) -> dict:
    """part → (ordered input names with dynamic axes, output names with dynamic axes)."""
    spatial = {0: "batch_size", 2: "height", 3: "width"}
    res = {name: dict(spatial) for name in residual_names(residuals)}
    latent_in = {"sample": dict(spatial), "timestep": {}, "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"}}
    return {
        "text_encoder": ({"input_ids": {0: "batch_size", 1: "sequence_length"}},
                         {"last_hidden_state": {0: "batch_size", 1: "sequence_length"}}),
        "controlnet": ({**latent_in, "controlnet_cond": {0: "batch_size", 2: "image_height", 3: "image_width"}}, res),
        "unet": ({**latent_in, **res}, {"out_sample": dict(spatial)}),
        "vae_decoder": ({"latent_sample": dict(spatial)}, {"sample": {0: "batch_size", 2: "image_height", 3: "image_width"}}),
    }


def _example_inputs(part: str, configs: dict, modules: dict, seed: int, pixels: int) -> dict:
    """Random inputs at batch 2 (classifier-free guidance's batch); the U-Net's residuals come from the ControlNet."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    channels = int(configs["vae"].get("latent_channels", 4))
    latent = pixels // (2 ** (len(configs["vae"]["block_out_channels"]) - 1))
    hidden = int(configs["text_encoder"]["hidden_size"])
    seq = int(configs["text_encoder"].get("max_position_embeddings", 77))
    if part == "text_encoder":
        vocab = int(configs["text_encoder"]["vocab_size"])
        return {"input_ids": torch.randint(0, vocab, (2, seq), generator=generator, dtype=torch.int64)}
    if part == "vae_decoder":
        return {"latent_sample": torch.randn(2, channels, latent, latent, generator=generator)}
    base = {
        "sample": torch.randn(2, channels, latent, latent, generator=generator),
        "timestep": torch.tensor(637.0),
        "encoder_hidden_states": torch.randn(2, seq, hidden, generator=generator),
    }
    mask = torch.zeros(2, 3, pixels, pixels)
    mask[:, :, pixels // 4 : pixels * 3 // 4, pixels // 3 : pixels * 5 // 6] = 1.0
    base["controlnet_cond"] = mask
    if part == "controlnet":
        return base
    with torch.no_grad():
        outputs = modules["controlnet"](**base)
    names = residual_names(len(outputs) - 1)
    return {**{k: base[k] for k in ("sample", "timestep", "encoder_hidden_states")},
            **{name: value * 0.5 for name, value in zip(names, outputs)}}


def _export_part(module, example: dict, signature, target: Path, opset: int) -> None:
    inputs, outputs = signature
    dynamic = {k: v for k, v in {**inputs, **outputs}.items() if v}
    export_to_onnx(module, tuple(example[name] for name in inputs), target, list(inputs), list(outputs), dynamic, opset,
                   gather_external_data=True)


def _check_part(part: str, module, example: dict, onnx_path: Path, outputs: list[str], precision: str, log: Log) -> dict:
    """torch vs onnxruntime (CPU) on the same input; ExportError naming the file beyond tolerance."""
    import numpy as np
    import torch

    with torch.no_grad():
        expected = module(**example)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    session = parity_session(onnx_path)
    feeds = {}
    for arg in session.get_inputs():
        value = example[arg.name].numpy()
        feeds[arg.name] = value.astype(np.int64 if arg.type == "tensor(int64)" else np.float32)
    actual = session.run(outputs, feeds)
    del session
    return compare_to_torch(actual, [e.float().numpy() for e in expected], TOLERANCE[precision], onnx_path, log, part,
                            f" at {precision}")


def export_controlnet_bundle(
    source: str | Path,
    controlnet: str | Path,
    destination: str | Path,
    precision: str = "fp32",
    opset: int = 18,
    name: str | None = None,
    description: str = "",
    sampling: dict | None = None,
    prompts: dict | None = None,
    overwrite: bool = False,
    source_label: str | None = None,
    log: Log = print,
) -> ExportReport:
    """Export SD-1.5 `source` + ControlNet `controlnet` to an sd-controlnet bundle at `destination`."""
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    source = Path(source).expanduser().resolve()
    controlnet = Path(controlnet).expanduser().resolve()
    destination = Path(destination).expanduser().resolve()
    if precision not in TOLERANCE:
        raise ExportError(f"precision {precision!r} is not one of {', '.join(TOLERANCE)}")
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination}: already exists (pass --overwrite to replace it)")
    configs = check_sources(source, controlnet)
    vae_scale = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
    size_multiple = vae_scale * 2 ** (len(configs["unet"]["block_out_channels"]) - 1)
    pixels = 2 * size_multiple
    text, unet, cn_model, vae = load_torch_models(source, controlnet)
    modules, residuals = _wrappers(text, unet, cn_model, vae)
    signatures = _signatures(residuals)
    import torch

    log(f"exporting with torch.onnx {torch.__version__} (TorchScript exporter)")
    with staged_folder(destination) as staging:
        bundle = staging.result
        parity = {}
        for part in PARTS:
            example = _example_inputs(part, configs, modules, seed=0, pixels=pixels)
            target = bundle / part / "model.onnx"
            _export_part(modules[part], example, signatures[part], target, opset)
            if precision == "fp16":
                log(f"converting {part} to fp16")
                _convert_to_fp16(target)
            check = _example_inputs(part, configs, modules, seed=1, pixels=pixels)
            parity[part] = _check_part(part, modules[part], check, target, list(signatures[part][1]), precision, log)
        tokenizer_info = _write_tokenizer(source, bundle / "tokenizer")
        cn = configs["controlnet"]
        ccis = cn.get("_class_name") == "CCISControlNetModel"
        exporter = f"torch.onnx {torch.__version__}"
        manifest = {
            **sd_manifest_fields(configs, KIND, name or destination.name, description, precision, tokenizer_info),
            # CCIS-Diff's inference settings (Sec. 3.1): DDIM, 20 steps, CFG 7.0
            "sampling": sampling or {"scheduler": "ddim", "steps": 20, "guidance_scale": 7.0},
            "prompts": prompts or {"add": "Polyp", "negative": ""},
            "controlnet": {
                "class": cn.get("_class_name"),
                "residuals": residual_names(residuals),
                "conditioning_channels": int(cn.get("conditioning_channels", 3)),
                "blur_mask_weighting": bool(ccis and cn.get("blur_mask_weighting", False)),
                "text_aware_attention": bool(ccis and cn.get("text_aware_attention", False)),
                "blur_sigma": float(cn.get("blur_sigma", 0.0)) if ccis else 0.0,
            },
            "source": source_provenance(
                configs, source_label or str(source), exporter, opset,
                controlnet_path=str(controlnet) if source_label is None else f"{source_label} (controlnet)",
            ),
            "parity": parity,
        }
        finish_bundle(bundle, manifest)
    seconds = time.perf_counter() - started
    log(f"bundle written to {destination} in {seconds:.1f} s")
    return ExportReport(destination, f"torch.onnx {torch.__version__}", precision, parity, seconds)
