#!/usr/bin/env python3
"""Regenerate the embedded demo feature bundle: a tiny RANDOM-WEIGHT DINOv2 for the retrieval proposer.

Its features are random: retrieval, `db build` and `propose` run end to end on a fresh machine, and their
boxes are geometrically valid, but what it retrieves means nothing. Real features come from the released
DINOv2 ViT-B/14 (a local transformers folder such as facebook/dinov2-base):
`python main.py export-features --from DINOV2_DIR --to exported_models/dinov2-vitb14`.

    python exported_models/make_demo_features.py      (needs the export extra: torch, transformers)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEMO_NAME = "demo-dinov2"
DESCRIPTION = (
    "Tiny random-weight DINOv2 (hidden 32, 2 layers, 2 heads, patch 14, 16×16 grid = 224×224 px), seed 0. "
    "Its features are RANDOM: retrieval runs, proposals are valid boxes, but their semantics are meaningless. "
    "For demos and tests only."
)


def main() -> int:
    from engine.export.dinov2_export import build_random_dinov2, export_dinov2_bundle

    with tempfile.TemporaryDirectory() as tmp:
        source = build_random_dinov2(Path(tmp) / "dinov2", seed=0)
        export_dinov2_bundle(
            source,
            HERE / DEMO_NAME,
            grid=(16, 16),
            name=DEMO_NAME,
            description=DESCRIPTION,
            overwrite=True,
            source_label="engine.export.dinov2_export.build_random_dinov2(seed=0, hidden_size=32, "
            "num_hidden_layers=2, patch_size=14)",
            extra={"random_weights": True},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
