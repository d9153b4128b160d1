"""Export the compact model's detail stage (engine.models.detail_unet: a folder with config.json +
model.safetensors) into a pixel-inpaint bundle being built (engine.export.compact_export), as its optional part::

    detail/model.onnx      sample (B, 10, H, W) [noisy image, low-resolution image brought up, masked image, mask],
                           timestep (B,), noise_level (B,) → out_sample (B, 3, H, W): the v-prediction
    detail/MODEL_CARD.md   how the stage was trained (when its card is given)

and the manifest's "detail" section: the scale over the base's working size, the steps, the conditioning noise
level, the smallest region crop it runs on, its scheduler (the base's noise schedule), architecture, parity and
provenance. Parity: onnxruntime against torch on random inputs at two sizes (``compare_to_torch``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from engine.errors import ExportError
from engine.export.onnx_export import (
    compare_to_torch,
    export_record,
    export_to_onnx,
    parity_session,
    worst_parity,
)

TOLERANCE = (1e-4, 1e-3)
PART = "detail"


def example_inputs(model, batch: int, size: tuple[int, int], seed: int = 0):
    """Random inputs of the detail U-Net: [noisy, low-resolution, masked frame, mask], timestep, noise level."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    h, w = size
    noisy = torch.randn(batch, 3, h, w, generator=generator)
    low = torch.rand(batch, 3, h, w, generator=generator) * 2 - 1
    masked = torch.rand(batch, 3, h, w, generator=generator) * 2 - 1
    mask = (torch.rand(batch, 1, h, w, generator=generator) > 0.5).float()
    sample = torch.cat([noisy, low, masked * (1 - mask), mask], dim=1)
    timestep = torch.randint(0, 1000, (batch,), generator=generator).float()
    level = torch.randint(0, 250, (batch,), generator=generator).float()
    return sample, timestep, level


def export_detail_part(detail_dir: Path, bundle: Path, base_scheduler: dict, base_resolution: int, opset: int,
                       card: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Write detail/ into the bundle folder being built; returns the manifest's "detail" section. ExportError when
    the stage was trained on another noise schedule or for another base resolution than the base's."""
    import torch

    from engine.models.detail_unet import load_detail_model

    model, config = load_detail_model(detail_dir)
    task = config["task"]
    if task["scheduler"] != base_scheduler:
        raise ExportError(f"{detail_dir}: the detail stage was trained on another noise schedule than the base's")
    if int(task["base_resolution"]) != base_resolution:
        raise ExportError(f"{detail_dir}: the detail stage was trained over a {task['base_resolution']}² base, "
                          f"this base works at {base_resolution}²")
    resolution, multiple = int(task["resolution"]), model.config.size_multiple
    folder = bundle / PART
    folder.mkdir(parents=True)
    onnx_path = folder / "model.onnx"
    log(f"exporting the detail stage ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters)")
    export_to_onnx(model, example_inputs(model, 2, (resolution, resolution)), onnx_path,
                   ["sample", "timestep", "noise_level"], ["out_sample"],
                   {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                    "noise_level": {0: "batch"}, "out_sample": {0: "batch", 2: "height", 3: "width"}}, opset)
    session = parity_session(onnx_path)
    checks = []
    sizes = [(resolution, resolution), (multiple * 3, multiple * 5)]
    for index, size in enumerate(sizes):
        sample, timestep, level = example_inputs(model, 2, size, seed=10 + index)
        with torch.no_grad():
            expected = model(sample, timestep, level).numpy()
        (actual,) = session.run(["out_sample"], {"sample": sample.numpy(), "timestep": timestep.numpy(),
                                                 "noise_level": level.numpy()})
        checks.append(compare_to_torch(actual, expected, TOLERANCE, onnx_path, log, f"detail at {size[1]}×{size[0]}"))
    if card is not None:
        shutil.copyfile(card, folder / "MODEL_CARD.md")
    atol, rtol = TOLERANCE
    return {
        "scale": resolution // base_resolution,
        "image_size": resolution,
        "size_multiple": multiple,
        "steps": int(task["sample_steps"]),
        "noise_level": int(task["sample_noise_level"]),
        "min_region_side": int(task["min_region_side"]),
        "scheduler": "ddim",
        "scheduler_config": dict(task["scheduler"]),
        "model_card": f"{PART}/MODEL_CARD.md" if card is not None else None,
        "training": {k: task[k] for k in ("resolution", "base_resolution", "max_noise_level", "mask_mode",
                                          "lg_weight", "outside_weight", "min_snr_gamma", "polyp_fraction")},
        "architecture": model.config.to_json(),
        "parity": {**worst_parity(checks), "atol": atol, "rtol": rtol, "sizes": [list(s) for s in sizes]},
        "source": export_record(opset, path=str(Path(detail_dir).resolve()), model_class=config["model_class"]),
    }
