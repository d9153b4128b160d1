"""The demo job: generated sample frames through the embedded demo bundle, images written to a folder.

Frames with a polyp mask get the polyp removed (prompt "Normal", mask widened to its padded box as Polyp-Gen's
sampler does); frames without one get a polyp added at a seeded elliptical mask (prompt "Polyp"). Until the
batch job (`main.py --batch`) lands, this is what `make demo` runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from engine.fileio import atomic_write_bytes, load_frame, load_mask, save_png_atomic
from engine.pipelines.inpaint import InpaintPipeline

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = REPO_ROOT / "exported_models" / "demo-sd-inpaint"


def padded_box_mask(mask: np.ndarray, pad: int) -> np.ndarray:
    """The mask's bounding box widened by `pad` pixels on each side, clipped to the frame."""
    rows, cols = np.nonzero(mask)
    box = np.zeros_like(mask, dtype=bool)
    top, bottom = max(0, rows.min() - pad), min(mask.shape[0], rows.max() + pad + 1)
    left, right = max(0, cols.min() - pad), min(mask.shape[1], cols.max() + pad + 1)
    box[top:bottom, left:right] = True
    return box


def ellipse_mask(height: int, width: int, seed: int) -> np.ndarray:
    """A seeded ellipse covering 2–6 % of the frame, away from the border."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(0.02, 0.06) * height * width
    aspect = rng.uniform(0.7, 1.4)
    ry = np.sqrt(area / np.pi / aspect)
    rx = ry * aspect
    cy = rng.uniform(0.3, 0.7) * height
    cx = rng.uniform(0.3, 0.7) * width
    yy, xx = np.mgrid[0:height, 0:width]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def run_demo(
    samples_dir: Path,
    output_dir: Path,
    bundle: Path = DEMO_BUNDLE,
    variants: int = 2,
    seed: int = 0,
    provider: str = "auto",
    log: Callable[[str], None] = print,
) -> list[dict]:
    from engine.samples import generate_sample_set

    pairs = generate_sample_set(samples_dir, count=6, seed=seed)
    pipeline = InpaintPipeline.from_bundle(bundle, provider=provider)
    log(f"model bundle {pipeline.bundle.name} on {pipeline.provider.upper()}" + (f" ({pipeline.provider_note})" if pipeline.provider_note else ""))
    records = []
    started = time.perf_counter()
    for index, (image_path, mask_path) in enumerate(pairs):
        frame = load_frame(image_path)
        if mask_path is not None:
            mode, prompt = "remove", pipeline.prompts["remove"]
            mask = padded_box_mask(load_mask(mask_path), pad=15)
        else:
            mode, prompt = "add", pipeline.prompts["add"]
            mask = ellipse_mask(frame.shape[0], frame.shape[1], seed=seed + index)
        prepared = pipeline.prepare_frame(frame, mask)
        seeds = [seed * 1000 + index * 10 + v for v in range(variants)]
        for result in pipeline.generate_variants(prepared, seeds, prompt=prompt):
            name = f"{Path(image_path).stem}__{mode}__seed{result.seed}.png"
            save_png_atomic(output_dir / "images" / name, result.image)
            save_png_atomic(output_dir / "masks" / name, mask.astype(np.uint8) * 255)
            records.append(
                {
                    "image": f"images/{name}",
                    "source_frame": str(image_path),
                    "mode": mode,
                    "seed": result.seed,
                    **result.settings,
                    "bundle": pipeline.bundle.name,
                    "bundle_id": pipeline.bundle.bundle_id,
                    "seconds": round(result.seconds, 3),
                }
            )
            log(f"  {name}  ({result.seconds:.2f} s)")
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_bytes(output_dir / "manifest.jsonl", text.encode("utf-8"))
    log(f"{len(records)} images in {time.perf_counter() - started:.1f} s → {output_dir.resolve()}")
    return records
