#!/usr/bin/env python3
"""Regenerate exported_models/demo-sd-controlnet: a tiny RANDOM-WEIGHT SD-1.5-like pipeline with a CCIS-Diff
ControlNet (blur-mask weighting and text-aware attention on), exported as an "sd-controlnet" bundle. Its
images are noise: it exists so `main.py generate` and the batch job with captions run on a fresh machine.

    python exported_models/make_demo_controlnet.py      (needs the export extra)
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> int:
    from engine.export.random_controlnet import build_demo_controlnet_bundle

    build_demo_controlnet_bundle(HERE / "demo-sd-controlnet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
