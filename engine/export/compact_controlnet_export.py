"""Export a compact CCIS ControlNet folder (engine.models.compact_controlnet.save_controlled_model: the compact base +
its ControlNet + vocab.json) to a "pixel-controlnet" bundle that engine.pipelines.compact_controlnet runs without
torch::

    bundle.json             kind "pixel-controlnet": the pixel-inpaint fields (image_size, size_multiple, classes,
                            scheduler, sampling) + "controlnet" (residual names, which CCIS additions are inside,
                            blur σ) + "tokenizer" (word vocabulary, max_length) + text_hidden_size
    text_encoder/model.onnx input_ids (B, L) int64 → last_hidden_state (B, L, D)
    controlnet/model.onnx   sample (B, 7, H, W), timestep (B,), class_labels (B,), encoder_hidden_states (B, L, D)
                            → down_0 … down_{n-1}, mid (the residuals, already through the zero convolutions)
    unet/model.onnx         sample, timestep, class_labels, down_0 … down_{n-1}, mid → out_sample (v-prediction)
    tokenizer/vocab.json    the word vocabulary (engine.text.word_tokenizer)
    MODEL_CARD.md           hashed like every other file

Parity: each part and the three chained are run in torch and onnxruntime on the same random inputs at two sizes;
the bundle is refused beyond the compact exporter's tolerance (``1e-4 + 1e-3·max|torch|``). Built in a temp
folder and renamed into place (a failed export leaves nothing).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from engine.bundle.format import FORMAT_NAME, FORMAT_VERSION
from engine.errors import ExportError
from engine.export.compact_export import DEFAULT_OPSET, TOLERANCE, Log, example_inputs
from engine.export.onnx_export import (
    compare_to_torch,
    export_record,
    export_to_onnx,
    parity_session,
    worst_parity,
)
from engine.fileio import staged_folder

KIND = "pixel-controlnet"


def _wrappers(model):
    from torch import nn

    count = len(model.controlnet.zero_convs)

    class TextEncoderPart(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = model.controlnet.text_encoder

        def forward(self, input_ids):
            return self.encoder(input_ids)

    class ControlNetPart(nn.Module):
        def __init__(self):
            super().__init__()
            self.controlnet = model.controlnet

        def forward(self, sample, timestep, class_labels, encoder_hidden_states):
            down, mid = self.controlnet(sample, timestep, class_labels, encoder_hidden_states)
            return (*down, mid)

    class UNetPart(nn.Module):
        def __init__(self):
            super().__init__()
            self.base = model.base

        def forward(self, sample, timestep, class_labels, *residuals):
            return self.base(sample, timestep, class_labels, list(residuals[:count]), residuals[count])

    return TextEncoderPart().eval(), ControlNetPart().eval(), UNetPart().eval()


def residual_names(model) -> list[str]:
    return [f"down_{i}" for i in range(len(model.controlnet.zero_convs))] + ["mid"]


def _example(model, vocab_size: int, batch: int, size: tuple[int, int], seed: int):
    """The compact exporter's example inputs for the base, then random caption token ids from the same generator."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    sample, timestep, labels = example_inputs(model.base, batch, size, generator=generator)
    ids = torch.randint(0, vocab_size, (batch, model.controlnet.config.max_tokens), generator=generator)
    return sample, timestep, labels, ids


def check_parity(model, paths: dict[str, Path], sizes: list[tuple[int, int]], log: Log) -> dict:
    """Each part and the chain text encoder → ControlNet → U-Net, onnxruntime against torch; ExportError beyond
    the tolerance."""
    import numpy as np
    import torch

    text_part, control_part, unet_part = _wrappers(model)
    sessions = {role: parity_session(path) for role, path in paths.items()}
    names = residual_names(model)
    checks: dict[str, list[dict]] = {}

    def compare(role: str, actual, expected, size) -> None:
        onnx_path = paths.get(role, paths["unet"])  # the chain's last part stands for it
        record = compare_to_torch(actual, expected, TOLERANCE, onnx_path, log, f"{role} at {size[1]}×{size[0]}")
        checks.setdefault(role, []).append(record)

    vocab = model.controlnet.config.vocab_size
    for index, size in enumerate(sizes):
        sample, timestep, labels, ids = _example(model, vocab, 2, size, seed=10 + index)
        with torch.no_grad():
            text = text_part(ids)
            residuals = control_part(sample, timestep, labels, text)
            out = unet_part(sample, timestep, labels, *residuals)
            chained = model(sample, timestep, labels, ids)
        (onnx_text,) = sessions["text_encoder"].run(["last_hidden_state"], {"input_ids": ids.numpy()})
        compare("text_encoder", onnx_text, text.numpy(), size)
        feeds = {"sample": sample.numpy(), "timestep": timestep.numpy(), "class_labels": labels.numpy()}
        onnx_residuals = sessions["controlnet"].run(names, {**feeds, "encoder_hidden_states": text.numpy()})
        compare("controlnet", np.concatenate([r.ravel() for r in onnx_residuals]),
                np.concatenate([r.numpy().ravel() for r in residuals]), size)
        unet_feeds = {**feeds, **{n: r.numpy() for n, r in zip(names, residuals)}}
        (onnx_out,) = sessions["unet"].run(["out_sample"], unet_feeds)
        compare("unet", onnx_out, out.numpy(), size)
        chain_residuals = sessions["controlnet"].run(names, {**feeds, "encoder_hidden_states": onnx_text})
        (onnx_chained,) = sessions["unet"].run(["out_sample"], {**feeds, **dict(zip(names, chain_residuals))})
        compare("chained", onnx_chained, chained.numpy(), size)
    atol, rtol = TOLERANCE
    return {role: {**worst_parity(records), "atol": atol, "rtol": rtol, "sizes": [list(s) for s in sizes]}
            for role, records in checks.items()}


def export_compact_controlnet_bundle(model_dir: str | os.PathLike[str], destination: str | os.PathLike[str],
                                     name: str | None = None, card: Path | None = None, overwrite: bool = True,
                                     description: str = "", opset: int = DEFAULT_OPSET, log: Log = print) -> Path:
    import torch

    from engine.bundle.format import write_manifest
    from engine.models.compact_controlnet import load_controlled_model
    from engine.models.compact_unet import CLASS_NAMES

    started = time.perf_counter()
    model_dir = Path(model_dir).resolve()
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination}: already exists (pass --overwrite to replace it)")
    model, tokenizer, config = load_controlled_model(model_dir)
    task = config["task"]
    resolution = int(task["resolution"])
    multiple = model.base.config.size_multiple
    cn = model.controlnet.config
    names = residual_names(model)
    text_part, control_part, unet_part = _wrappers(model)
    example = _example(model, cn.vocab_size, 2, (resolution, resolution), seed=0)
    sample, timestep, labels, ids = example
    with torch.no_grad():
        text = text_part(ids)
        residuals = control_part(sample, timestep, labels, text)
    spatial = {0: "batch", 2: "height", 3: "width"}
    with staged_folder(destination) as staging:
        bundle = staging.result
        paths = {role: bundle / role / "model.onnx" for role in ("text_encoder", "controlnet", "unet")}
        log(f"exporting the compact CCIS ControlNet ({sum(p.numel() for p in model.controlnet.parameters()) / 1e6:.2f} M "
            f"parameters, base {sum(p.numel() for p in model.base.parameters()) / 1e6:.2f} M) with torch.onnx, "
            f"opset {opset}")
        export_to_onnx(text_part, (ids,), paths["text_encoder"], ["input_ids"], ["last_hidden_state"],
                       {"input_ids": {0: "batch"}, "last_hidden_state": {0: "batch"}}, opset)
        residual_axes = {n: {0: "batch", 2: f"{n}_height", 3: f"{n}_width"} for n in names}
        export_to_onnx(control_part, (sample, timestep, labels, text), paths["controlnet"],
                       ["sample", "timestep", "class_labels", "encoder_hidden_states"], names,
                       {"sample": spatial, "timestep": {0: "batch"}, "class_labels": {0: "batch"},
                        "encoder_hidden_states": {0: "batch"}, **residual_axes}, opset)
        export_to_onnx(unet_part, (sample, timestep, labels, *residuals), paths["unet"],
                       ["sample", "timestep", "class_labels", *names], ["out_sample"],
                       {"sample": spatial, "timestep": {0: "batch"}, "class_labels": {0: "batch"},
                        "out_sample": spatial, **residual_axes}, opset)
        parity = check_parity(model, paths, [(resolution, resolution), (multiple * 3, multiple * 5)], log)
        (bundle / "tokenizer").mkdir()
        (bundle / "tokenizer" / "vocab.json").write_bytes(tokenizer.to_bytes())
        if card is not None:
            shutil.copyfile(card, bundle / "MODEL_CARD.md")

        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "name": name or destination.name,
            "description": description or "PolypForge compact CCIS ControlNet (mask + clinical caption) on the "
                                          "compact pixel-space polyp model",
            "precision": "fp32",
            "image_size": resolution,
            "size_multiple": multiple,
            "image_channels": int(model.base.config.image_channels),
            "classes": list(CLASS_NAMES),
            "prediction_type": task["scheduler"]["prediction_type"],
            "scheduler": dict(task["scheduler"]),
            "sampling": {"steps": int(task.get("sample_steps", 20)), "guidance_scale": float(task.get("sample_guidance", 3.0)),
                         "scheduler": "ddim", "inpaint_area": "region", "region_padding": None},
            # The prompt is the clinical caption; with none the ControlNet sees the empty caption (the mask alone).
            "prompts": {"add": "", "negative": ""},
            "text_hidden_size": int(cn.text_dim),
            "tokenizer": {"kind": "word", "file": "tokenizer/vocab.json", "max_length": int(tokenizer.max_length),
                          "vocab_size": int(tokenizer.size)},
            "controlnet": {"residuals": names, "class_label": CLASS_NAMES.index("Polyp"),
                           "blur_mask_weighting": bool(cn.blur_mask_weighting),
                           "text_aware_attention": bool(cn.text_aware_attention), "blur_sigma": float(cn.blur_sigma),
                           "text_levels": list(cn.levels(len(model.base.config.widths)))},
            "model_card": "MODEL_CARD.md" if card is not None else None,
            "training": {k: task[k] for k in ("resolution", "mask_mode", "lg_weight", "outside_weight", "min_snr_gamma",
                                              "text_dropout", "captions", "init_from") if k in task},
            "architecture": {"base": model.base.config.to_json(), "controlnet": cn.to_json()},
            "parity": parity,
            "source": export_record(opset, path=str(model_dir), model_class=config["model_class"]),
        }
        from engine.bundle.training_frames import KEY as TRAINING_FRAMES, copy_training_frames

        trained_on = copy_training_frames(model_dir, bundle)  # None for a model from before the list existed
        if trained_on is not None:
            manifest[TRAINING_FRAMES] = trained_on
        write_manifest(bundle, {**manifest, "files": {}})
    log(f"bundle written to {destination} in {time.perf_counter() - started:.1f} s")
    return destination
