#!/usr/bin/env python3
"""Regenerate the embedded demo bundle: a tiny RANDOM-WEIGHT Stable-Diffusion-inpainting model.

Its "polyps" are coloured noise: it exists so the app, the demo and the tests run on a fresh machine with no
download. Real bundles come from `python main.py export --from DIFFUSERS_DIR --to BUNDLE_DIR`.

    python exported_models/make_demo_bundle.py      (needs the export extra: torch, diffusers, optimum)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEMO_NAME = "demo-sd-inpaint"
DESCRIPTION = (
    "Tiny random-weight SD-inpainting model (9-channel U-Net 32/64, 4-level VAE 8-32, 3-layer CLIP text encoder), "
    "seed 0. It generates noise-like texture, not polyps: for demos and tests only."
)


def main() -> int:
    from engine.export.inpaint_export import export_inpaint_bundle
    from engine.export.random_pipeline import build_random_inpaint_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        source = build_random_inpaint_pipeline(Path(tmp) / "pipeline", "tiny", seed=0)
        export_inpaint_bundle(
            source,
            HERE / DEMO_NAME,
            name=DEMO_NAME,
            description=DESCRIPTION,
            sampling={"scheduler": "dpm++", "steps": 20, "guidance_scale": 7.5},
            overwrite=True,
            source_label="engine.export.random_pipeline.build_random_inpaint_pipeline(size='tiny', seed=0)",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
