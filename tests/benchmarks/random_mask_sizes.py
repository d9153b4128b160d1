#!/usr/bin/env python3
"""Sizes of random masks on real frames, per report bin, beside the real Kvasir-SEG polyps'.

    python tests/benchmarks/random_mask_sizes.py                  # 500 masks on the 60 frames of shared/data/polyps
    python tests/benchmarks/random_mask_sizes.py --count 2000 --frames DIR

Each mask is what a job's random mask source makes (engine.masks.sources.resolve_region, sizes from the
Kvasir-SEG prior, each mask's seed derived as a job derives a variant's) on a frame taken in turn: once with the frame's own polyps to avoid
(as adding to a polyp frame does), once without them (as on a frame without masks). Shown per bin of the
frame's area: the sizes drawn, the sizes placed (after shrinking to fit, or being cut by the view's border),
and the real polyps of Kvasir-SEG's masks.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from engine.dataset.image_reader import read_frame, read_mask  # noqa: E402
from engine.jobs.runner import variant_seed  # noqa: E402
from engine.masks.size_prior import instance_sizes, size_bin  # noqa: E402
from engine.masks.sources import Skip, resolve_region  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"
BINS = ("<2", "2-5", "5-10", "10-20", ">20")


def row(name: str, sizes: list[float]) -> str:
    counts = Counter(size_bin(size) for size in sizes)
    shares = "  ".join(f"{counts[label] / len(sizes):6.1%}" for label in BINS)
    return f"{name:<50} {len(sizes):>5}  {shares}   median {np.median(sizes):6.1%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, default=SHARED / "polyps")
    parser.add_argument("--real-masks", type=Path, default=SHARED / "kvasir-seg" / "masks")
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    images = sorted((args.frames / "images").glob("*.jpg"))
    frames = [(read_frame(path), read_mask(args.frames / "masks" / path.name)) for path in images]
    results: dict[str, list[float]] = {"drawn (prior)": [], "placed, avoiding the frames' polyps": [],
                                       "placed, frames without masks": []}
    skipped = Counter()
    for index in range(args.count):
        frame, mask = frames[index % len(frames)]
        seed = variant_seed(0, images[index % len(images)].name, index // len(images))
        for name, user_mask in (("placed, avoiding the frames' polyps", mask), ("placed, frames without masks", None)):
            try:
                size = resolve_region("add", "random", frame, user_mask, [], 15, seed).size
            except Skip:
                skipped[name] += 1
                continue
            results[name].append(size["size_placed"])
            if user_mask is None:
                results["drawn (prior)"].append(size["size_drawn"])
    real = [size for path in sorted(args.real_masks.iterdir()) for size in instance_sizes(read_mask(path))]
    print(f"{'% of the frame':<50} {'n':>5}  " + "  ".join(f"{label:>6}" for label in BINS))
    print(row("Kvasir-SEG polyps (real)", real))
    for name, sizes in results.items():
        print(row(f"random masks, {name}", sizes))
    for name, count in skipped.items():
        print(f"skipped ({name}): {count}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
