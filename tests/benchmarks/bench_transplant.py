"""Transplant speed: variants per second of each blending, and the model blending's time per image next to the
default model's own add-mode time on the same frames, in one run (same machine, same moment).

    python tests/benchmarks/bench_transplant.py --input ../shared/data/polyps --out /tmp/bench-transplant \
        [--variants 3] [--threads 2]

Prints, per arm: variants written, the job's wall time, variants per second (whole job: start-up, donor reading,
writing PNGs and the annotation files included), and the median per-variant seconds the manifest records. The
issue's goals: copy-paste and Poisson ≥ 5 variants/s at 2 threads; the model blending within the default model's
per-image time (the ratio printed last).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.jobs import build_spec, run_job  # noqa: E402

ARMS = {
    "transplant none": {"mode": "transplant", "harmonize": "none"},
    "transplant poisson": {"mode": "transplant", "harmonize": "poisson"},
    "transplant model": {"mode": "transplant", "harmonize": "model"},
    "add, random masks (default model)": {"mode": "add", "mask_source": "random"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    per_variant = {}
    print(f"{'arm':36s} {'variants':>8s} {'wall s':>7s} {'var/s':>6s} {'median s/variant':>16s}")
    for name, values in ARMS.items():
        output = args.out / name.split(" (")[0].replace(" ", "-").replace(",", "")
        spec = build_spec({"input": args.input, "output": output, "variants": args.variants, "seed": 0,
                           "threads": args.threads, "provider": "cpu", "resume": False, **values})
        started = time.perf_counter()
        summary = run_job(spec)
        wall = time.perf_counter() - started
        seconds = [json.loads(line)["seconds"] for line in (output / "manifest.jsonl").read_text().splitlines()
                   if line.strip() and json.loads(line)["status"] == "ok"]
        per_variant[name] = statistics.median(seconds)
        print(f"{name:36s} {summary.ok:8d} {wall:7.1f} {summary.ok / wall:6.2f} {per_variant[name]:16.3f}")
    ratio = per_variant["transplant model"] / per_variant["add, random masks (default model)"]
    print(f"model blending / default model add, per image: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
