"""Export the compact polyp model (engine.models.compact_unet: a folder with config.json + model.safetensors)
to a "pixel-inpaint" bundle that engine.pipelines.compact runs without torch::

    bundle.json      kind "pixel-inpaint": image_size (training crop side), size_multiple, classes (prompt →
                     class label), scheduler config, sampling defaults (region inpainting), provenance, parity
    unet/model.onnx  sample (B, 7, H, W) [noisy image, masked image, mask], timestep (B,), class_labels (B,)
                     [, attributes (B, A) int64: a model trained with attributes] → out_sample (B, 3, H, W): the
                     v-prediction
    MODEL_CARD.md    what it was trained on, how long, its figures and limits (hashed like every other file)
    detail/          optional (``detail_dir``): the detail stage and the manifest's "detail" section
                     (engine.export.detail_export)

A model trained with attributes (``CompactConfig.attributes``) gets the "attributes" input and the manifest an
"attributes" section, {"names": [...], "values": {name: [...]}} in the input's column order (index 0 of each is
"not asked", i its i-th value); an attribute-less model's bundle is what it always was.

torch.onnx (TorchScript exporter, dynamic batch and spatial axes); torch and onnxruntime are run on the same random
input at two sizes and the bundle is refused if they differ by more than ``1e-4 + 1e-3·max|torch|``. Built in a
temp folder and renamed into place (a failed export leaves nothing).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from engine.bundle.format import FORMAT_NAME, FORMAT_VERSION
from engine.errors import ExportError
from engine.export.onnx_export import (
    compare_to_torch,
    export_record,
    export_to_onnx,
    parity_session,
    worst_parity,
)
from engine.fileio import staged_folder

Log = Callable[[str], None]
TOLERANCE = (1e-4, 1e-3)
DEFAULT_OPSET = 17


def example_inputs(model, batch: int, size: tuple[int, int], seed: int = 0, generator=None):
    """Random example inputs of the compact U-Net (noisy sample + masked frame + mask, timestep, class), drawn from
    ``generator`` when given, else from one seeded with ``seed``."""
    import torch

    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    h, w = size
    noisy = torch.randn(batch, 3, h, w, generator=generator)
    masked = torch.rand(batch, 3, h, w, generator=generator) * 2 - 1
    mask = (torch.rand(batch, 1, h, w, generator=generator) > 0.5).float()
    sample = torch.cat([noisy, masked * (1 - mask), mask], dim=1)
    timestep = torch.randint(0, 1000, (batch,), generator=generator).float()
    labels = torch.randint(0, model.config.num_classes, (batch,), generator=generator)
    return sample, timestep, labels


def example_attributes(model, batch: int, seed: int = 0):
    """Random attribute indices (B, A) of a model trained with attributes (0 = not asked included)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    columns = [torch.randint(0, len(values) + 1, (batch, 1), generator=generator)
               for _, values in model.config.attributes]
    return torch.cat(columns, dim=1)


def with_attributes(model):
    """The U-Net with the attribute indices as its fourth positional input (what torch.onnx traces)."""
    import torch

    class WithAttributes(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def forward(self, sample, timestep, class_labels, attributes):
            return self.model(sample, timestep, class_labels, attributes=attributes)

    return WithAttributes(model)


def attributes_section(model) -> dict | None:
    """bundle.json's "attributes" section of a model trained with attributes, else None."""
    if not model.config.attributes:
        return None
    return {"names": [name for name, _ in model.config.attributes],
            "values": {name: list(values) for name, values in model.config.attributes}}


def check_parity(model, onnx_path: Path, sizes: list[tuple[int, int]], log: Log) -> dict:
    """The U-Net in onnxruntime against torch on random inputs at each size (with random attributes when the model
    has them); ExportError beyond the tolerance."""
    import numpy as np
    import torch

    session = parity_session(onnx_path)
    checks = []
    for index, size in enumerate(sizes):
        sample, timestep, labels = example_inputs(model, 2, size, seed=10 + index)
        feeds = {"sample": sample.numpy(), "timestep": timestep.numpy(), "class_labels": labels.numpy().astype(np.int64)}
        extra = {}
        if model.config.attributes:
            extra["attributes"] = example_attributes(model, 2, seed=20 + index)
            feeds["attributes"] = extra["attributes"].numpy().astype(np.int64)
        with torch.no_grad():
            expected = model(sample, timestep, labels, **extra).numpy()
        (actual,) = session.run(["out_sample"], feeds)
        checks.append(compare_to_torch(actual, expected, TOLERANCE, onnx_path, log, f"unet at {size[1]}×{size[0]}"))
    atol, rtol = TOLERANCE
    return {"unet": {**worst_parity(checks), "atol": atol, "rtol": rtol, "sizes": [list(s) for s in sizes]}}


def export_compact_bundle(model_dir: str | os.PathLike[str], destination: str | os.PathLike[str], name: str | None = None,
                          card: Path | None = None, overwrite: bool = True, description: str = "",
                          extra: dict | None = None, opset: int = DEFAULT_OPSET, log: Log = print,
                          detail_dir: str | os.PathLike[str] | None = None, detail_card: Path | None = None) -> Path:
    """The bundle of the compact model in ``model_dir``; with ``detail_dir``, with that detail stage (its card,
    ``detail_card``, goes to detail/MODEL_CARD.md). Without it the bundle is what it always was."""
    from engine.bundle.format import write_manifest
    from engine.models.compact_unet import load_compact_model

    started = time.perf_counter()
    model_dir = Path(model_dir).resolve()
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not overwrite:
        raise ExportError(f"{destination}: already exists (pass --overwrite to replace it)")
    model, config = load_compact_model(model_dir)
    task = config["task"]
    resolution = int(task["resolution"])
    multiple = model.config.size_multiple
    with staged_folder(destination) as staging:
        bundle = staging.result
        (bundle / "unet").mkdir(parents=True)
        onnx_path = bundle / "unet" / "model.onnx"
        log(f"exporting the compact model ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters) "
            f"with torch.onnx, opset {opset}")
        inputs = ["sample", "timestep", "class_labels"]
        axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                "class_labels": {0: "batch"}, "out_sample": {0: "batch", 2: "height", 3: "width"}}
        examples = example_inputs(model, 2, (resolution, resolution), seed=0)
        traced = model
        attributes = attributes_section(model)
        if attributes is not None:
            traced = with_attributes(model)
            examples = (*examples, example_attributes(model, 2, seed=0))
            inputs.append("attributes")
            axes["attributes"] = {0: "batch"}
        export_to_onnx(traced, examples, onnx_path, inputs, ["out_sample"], axes, opset)
        parity = check_parity(model, onnx_path, [(resolution, resolution), (multiple * 3, multiple * 5)], log)
        if card is not None:
            shutil.copyfile(card, bundle / "MODEL_CARD.md")
        detail = None
        if detail_dir is not None:
            from engine.export.detail_export import export_detail_part

            detail = export_detail_part(Path(detail_dir).resolve(), bundle, dict(task["scheduler"]), resolution, opset,
                                        card=detail_card, log=log)
        from engine.bundle.training_frames import KEY as TRAINING_FRAMES, copy_training_frames
        from engine.models.compact_unet import CLASS_NAMES

        trained_on = copy_training_frames(model_dir, bundle)  # None for a model from before the list existed
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": "pixel-inpaint",
            "name": name or destination.name,
            "description": description or "PolypForge compact pixel-space polyp inpainting model",
            "precision": "fp32",
            "image_size": resolution,
            "size_multiple": multiple,
            "image_channels": int(model.config.image_channels),
            "classes": list(CLASS_NAMES),
            "prediction_type": task["scheduler"]["prediction_type"],
            "scheduler": dict(task["scheduler"]),
            "sampling": {"steps": int(task.get("sample_steps", 20)), "guidance_scale": float(task.get("sample_guidance", 2.0)),
                         "scheduler": "ddim", "inpaint_area": "region", "region_padding": None},
            "prompts": {"add": "Polyp", "remove": "Normal", "negative": ""},
            "model_card": "MODEL_CARD.md" if card is not None else None,
            "training": {k: task[k] for k in ("resolution", "mask_mode", "lg_weight", "outside_weight", "min_snr_gamma",
                                              "polyp_fraction") if k in task},
            "architecture": model.config.to_json(),
            "parity": parity,
            "source": export_record(opset, path=str(model_dir), model_class="CompactInpaintUNet"),
            **({"detail": detail} if detail is not None else {}),
            **({"attributes": attributes} if attributes is not None else {}),
            **({TRAINING_FRAMES: trained_on} if trained_on is not None else {}),
            **(extra or {}),
        }
        write_manifest(bundle, {**manifest, "files": {}})
    log(f"bundle written to {destination} in {time.perf_counter() - started:.1f} s")
    return destination
