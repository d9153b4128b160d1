#!/usr/bin/env python3
"""Does an attribute-conditioned compact model obey? The captioner reads back what each variant was asked.

    python tests/benchmarks/attribute_readback.py --bundle .bench/compact-attributes \\
        --frames ../shared/data/kvasir-seg --held-out training_runs/compact-attributes/model/held_out_frames.txt \\
        --out .bench/attribute-readback --threads 2

For each chosen value (every colour and surface, and flat/raised) it runs the batch job on the held-out frames
(`--mask-source random --attributes VALUE`, one variant per frame, the same seed for every value, so the masks are
the same and only the asked word differs), plus once with `--attributes none` (nothing asked: the model's own
habits, the chance level). Then the captioner describes each generated polyp (its own mask only) and the script
prints, per value: how often it is read back when asked, how often when nothing was asked, and their ratio. Issue
25's goal: the asked colour and surface read back at least twice as often as by chance. Results: OUT/readback.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE))

from bench_jobs import add_job_args_option, chosen_names, held_out_names, link_frames, ok_records, run_batch  # noqa: E402

ASKED = {"colour": ("pale", "pink", "red", "whitish"), "surface": ("smooth", "lobulated", "irregular"),
         "elevation": ("flat", "raised")}


def run_job(bundle: str, frames: Path, out: Path, attributes: str, threads: int, seed: int,
            job_args: tuple[str, ...] = ()) -> Path:
    run_batch(["--input", str(frames), "--model", bundle, "--mask-source", "random", "--mode", "add", "--variants",
               "1", "--seed", str(seed), "--attributes", attributes, "--threads", str(threads), *job_args], out)
    return out


def read_back(dataset: Path) -> list[dict]:
    """The captioner's attributes of every generated polyp of a dataset (its own mask only)."""
    from engine.captioning.captioner import caption_frame
    from engine.captioning.conditioning import polyp_attributes
    from engine.dataset.image_reader import read_frame
    from engine.errors import PolypForgeError
    from engine.masks.instances import Instance

    found = []
    for record in ok_records(dataset):
        image = read_frame(dataset / record["image"])
        for data in record["instances"]:
            if data["origin"] != "generated":
                continue
            mask = Instance.from_json(data).raster(image.shape[0], image.shape[1])
            try:
                polyp = caption_frame(image, mask).polyps[0]
            except PolypForgeError:
                continue
            found.append(polyp_attributes(polyp.attributes))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--frames", type=Path, required=True, help="frames + masks (Kvasir-SEG layout)")
    parser.add_argument("--held-out", type=Path, default=None, help="the model's held_out_frames.txt")
    parser.add_argument("--limit", type=int, default=56)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    add_job_args_option(parser)
    parser.add_argument("--values", default="", help="comma list of asked values to measure (default: all)")
    args = parser.parse_args()
    job_args = tuple(args.job_args)
    only = {value for value in args.values.split(",") if value}
    out = args.out.resolve()
    frames = out / "frames"
    data = args.frames.resolve()
    names = chosen_names(data, held_out_names(args.held_out) if args.held_out else None, args.limit)
    link_frames(data, names, frames)
    count = len(names)
    print(f"{count} frames; one variant each per asked value", file=sys.stderr)
    baseline = Counter()
    base = read_back(run_job(args.bundle, frames, out / "none", "none", args.threads, args.seed, job_args))
    for attributes in base:
        baseline.update((name, value) for name, value in attributes.items() if value)
    rows = []
    for name, values in ASKED.items():
        for value in values:
            if only and value not in only:
                continue
            got = read_back(run_job(args.bundle, frames, out / f"{name}-{value}", value, args.threads, args.seed,
                                    job_args))
            hits = sum(1 for a in got if a.get(name) == value)
            told = sum(1 for a in got if a.get(name))
            chance = baseline[(name, value)] / max(1, sum(1 for a in base if a.get(name)))
            rate = hits / max(1, told)
            rows.append({"attribute": name, "asked": value, "variants": len(got), "told": told,
                         "read_back": round(rate, 3), "when_not_asked": round(chance, 3),
                         "ratio": round(rate / chance, 2) if chance else None})
    record = {"bundle": args.bundle, "frames": count, "job_args": list(job_args), "rows": rows}
    (out / "readback.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"{'attribute':10s} {'asked':10s} {'n':>4s} {'read back':>10s} {'not asked':>10s} {'ratio':>6s}")
    for row in rows:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(f"{row['attribute']:10s} {row['asked']:10s} {row['told']:4d} {row['read_back']:10.1%} "
              f"{row['when_not_asked']:10.1%} {ratio:>6s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
