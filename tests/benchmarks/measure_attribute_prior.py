#!/usr/bin/env python3
"""Measure the Kvasir-SEG attribute prior that a batch job draws a variant's attributes from when its input has
too few annotated polyps (``--attributes auto``).

    python tests/benchmarks/measure_attribute_prior.py          # writes engine/captioning/kvasir_seg_attributes.json
    python tests/benchmarks/measure_attribute_prior.py --data DIR --out FILE

Every frame of DIR/images with its mask in DIR/masks is captioned (engine.captioning.captioner: every polyp of
the mask, largest first); each polyp's colour, surface and elevation are counted (``counts``: what a job draws
from), and its size and outline too (``derived_counts``: for information; a job measures those on its own
masks). A value the captioner could not tell (elevation None) is counted under ``not_told``, not drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from engine.captioning.captioner import MEASURE_VERSION, NoPolyp, caption_frame  # noqa: E402
from engine.captioning.conditioning import (  # noqa: E402
    CHOSEN,
    DERIVED,
    KVASIR_SEG_ATTRIBUTE_PRIOR_FILE,
    PRIOR_SOURCE,
    VOCABULARY,
    AttributeDistribution,
    polyp_attributes,
)
from engine.dataset.image_reader import read_frame, read_mask  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "kvasir-seg"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Kvasir-SEG folder (images/, masks/)")
    parser.add_argument("--out", type=Path, default=KVASIR_SEG_ATTRIBUTE_PRIOR_FILE)
    args = parser.parse_args()
    started = time.perf_counter()
    images = sorted(p for p in (args.data / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    polyps, frames = [], 0
    for index, path in enumerate(images):
        mask_path = next((args.data / "masks" / f"{path.stem}{s}" for s in (".jpg", ".png", path.suffix)
                          if (args.data / "masks" / f"{path.stem}{s}").is_file()), None)
        if mask_path is None:
            continue
        try:
            caption = caption_frame(read_frame(path), read_mask(mask_path))
        except NoPolyp:
            continue
        frames += 1
        polyps.extend(polyp_attributes(p.attributes) for p in caption.polyps)
        if (index + 1) % 100 == 0:
            print(f"{index + 1} / {len(images)} frames ({time.perf_counter() - started:.0f} s)", flush=True)
    distribution = AttributeDistribution.of_polyps(polyps, PRIOR_SOURCE)
    not_told = {name: sum(1 for p in polyps if p[name] is None) for name in (*CHOSEN, *DERIVED)}
    derived = {name: {v: sum(1 for p in polyps if p[name] == v) for v in VOCABULARY[name]} for name in DERIVED}
    data = {
        "dataset": "Kvasir-SEG (Jha et al. 2020), its 1000 frames with their ground-truth masks",
        "unit": "polyps (8-connected components of the mask, as the captioner splits them), counted per value",
        "frames": frames,
        "polyps": len(polyps),
        "captioner": MEASURE_VERSION,
        "measured": date.today().isoformat(),
        "script": "tests/benchmarks/measure_attribute_prior.py",
        "source": PRIOR_SOURCE,
        "counts": distribution.counts,
        "not_told": {k: v for k, v in not_told.items() if v},
        "derived_counts": derived,
    }
    lines = [f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" for key, value in data.items()]
    args.out.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"{len(polyps)} polyps in {frames} frames → {args.out} ({time.perf_counter() - started:.0f} s)")
    for name in (*CHOSEN, *DERIVED):
        counts = distribution.counts.get(name) or derived[name]
        print(f"  {name:>9}: " + ", ".join(f"{v} {c} ({c / max(1, len(polyps)):.0%})" for v, c in Counter(counts).items())
              + (f", not told {not_told[name]}" if not_told[name] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
