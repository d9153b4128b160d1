#!/usr/bin/env python3
"""Measure the Kvasir-SEG polyp size prior that random masks use when the input has no masks.

    python tests/benchmarks/measure_size_prior.py                       # writes engine/masks/kvasir_seg_sizes.json
    python tests/benchmarks/measure_size_prior.py --masks DIR --out FILE

Every mask is binarised (> 127, as Kvasir-SEG's JPEG masks need) and split into polyps (8-connected
components, specks dropped: engine.masks.instances); each polyp's size is its pixel count over its own
frame's. The file keeps the distribution's 101 quantiles with where and when it was measured; the share of
polyps per report bin (< 2, 2–5, 5–10, 10–20, > 20 % of the frame) is printed.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from engine.masks.size_prior import (  # noqa: E402
    KVASIR_SEG_PRIOR_FILE,
    KVASIR_SEG_PRIOR_SOURCE,
    SizeDistribution,
    instance_sizes,
    save,
    size_bin,
)

DEFAULT_MASKS = REPO_ROOT.parent / "shared" / "data" / "kvasir-seg" / "masks"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=Path, default=DEFAULT_MASKS, help="Kvasir-SEG masks folder")
    parser.add_argument("--out", type=Path, default=KVASIR_SEG_PRIOR_FILE)
    args = parser.parse_args()
    paths = sorted(p for p in args.masks.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    sizes = [size for path in paths for size in instance_sizes(np.asarray(Image.open(path).convert("L")))]
    distribution = SizeDistribution.from_sizes(sizes, KVASIR_SEG_PRIOR_SOURCE)
    save(distribution, args.out, dataset="Kvasir-SEG (Jha et al. 2020), its 1000 ground-truth masks",
         unit="area of one polyp (8-connected component of the mask > 127) as a fraction of its frame",
         frames=len(paths), count=len(sizes), measured=date.today().isoformat(),
         script="tests/benchmarks/measure_size_prior.py")
    print(f"{len(sizes)} polyps in {len(paths)} masks → {args.out}")
    print("median {:.1%}, p25 {:.1%}, p75 {:.1%}, p90 {:.1%}".format(*np.quantile(sizes, [0.5, 0.25, 0.75, 0.9])))
    counts = Counter(size_bin(size) for size in sizes)
    for label in ("<2", "2-5", "5-10", "10-20", ">20"):
        print(f"  {label:>6} %: {counts[label] / len(sizes):6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
