#!/usr/bin/env python3
"""Removals measured: is the fill as light and as detailed as the mucosa around it? Bundles side by side.

    python tests/benchmarks/removal_quality.py --frames ../shared/data/polyps --bundles polypforge-compact,.bench/compact-attributes --out .bench/removal-quality

Each bundle removes every annotated polyp of the frames at its box (`--mode remove --mask-source box`, 15 px
padding as Polyp-Gen). For each removal, over the removed region R and the ring of mucosa around it (out to a
third of R's equivalent radius, the view's black border and highlights left out):

- darkness: median luma of R minus median luma of the ring (0 = as light as the surround; a dark smudge is
  strongly negative);
- detail: the spread (robust std) of R's high-pass (luma minus a Gaussian of σ 2 px) over the ring's (1 = as
  much fine texture as the surround; a soft, upscaled fill is well under 1).

The measure is the batch job's own mucosa check's (engine.judge.mucosa_check). The jobs run without that check
(each removal as first painted: the model itself) unless `--job-args=--mucosa-check` asks for it; then the removals
it rejected are counted per bin, and the medians and shares are of the removals it kept.

Printed per bundle and per size bin of the removed box (share of the frame): the medians, and the share of
removals with a dark smudge (darkness < −15) and with a blur (detail < 0.5). Issue 25's goal: no dark smudge or
blur at boxes up to 40 % of the frame. Results in OUT/removal_quality.json; OUT/<bundle>/ holds the datasets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(HERE))

from bench_jobs import add_job_args_option, run_batch  # noqa: E402
BINS = ((0.0, 0.05), (0.05, 0.10), (0.10, 0.20), (0.20, 0.40), (0.40, 1.01))
SMUDGE, BLUR = -15.0, 0.5  # SMUDGE: engine.judge.mucosa_check.DEFAULT_MAX_DARKNESS, negated
BOX_PAD = 15  # the batch job's default --box-pad


def measure(image: np.ndarray, region: np.ndarray) -> dict | None:
    """The removal's darkness and detail against its mucosa ring (engine.judge.mucosa_check, the batch job's own
    measure)."""
    from engine.judge.mucosa_check import measure_fill

    measured = measure_fill(image, region)
    return None if measured is None else {"darkness": measured.darkness, "detail": measured.detail,
                                          "area": measured.area}


def run_bundle(bundle: str, frames: Path, out: Path, threads: int, job_args: tuple[str, ...] = ()) -> Path:
    run_batch(["--input", str(frames), "--model", bundle, "--mode", "remove", "--mask-source", "box", "--variants",
               "1", "--threads", str(threads), *job_args], out)
    return out


def measure_dataset(dataset: Path) -> list[dict]:
    from engine.dataset.image_reader import read_frame
    from engine.masks.instances import padded_box_mask

    rows = []
    lines = (dataset / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    for record in (json.loads(line) for line in lines if line.strip()):
        if record.get("status") not in ("ok", "rejected"):
            continue
        kept = record["status"] == "ok"  # a removal the mucosa check (--mucosa-check) rejected lies in rejected/
        image = read_frame(dataset / ("" if kept else "rejected") / record["image"])
        region = np.zeros(image.shape[:2], bool)
        for removed in record.get("removed", []):  # the repainted box: the polyp's box padded as the job did
            region |= padded_box_mask(tuple(removed["bbox"]), BOX_PAD, image.shape[0], image.shape[1])
        if not region.any():
            continue
        row = measure(image, region)
        if row is not None:
            rows.append({"frame": record["source_frame"], "variant": record.get("variant", 0), "kept": kept, **row})
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per size bin of the removed box: the kept removals' medians and shares smudged and blurred, and how many the
    mucosa check rejected (0 without it)."""
    out = []
    for low, high in BINS:
        chosen = [r for r in rows if low <= r["area"] < high]
        kept = [r for r in chosen if r.get("kept", True)]
        if not chosen:
            continue
        out.append({"area_from": low, "area_to": min(high, 1.0), "removals": len(chosen), "rejected": len(chosen) - len(kept),
                    "darkness": round(float(np.median([r["darkness"] for r in kept])), 1) if kept else None,
                    "detail": round(float(np.median([r["detail"] for r in kept])), 2) if kept else None,
                    "smudged": round(sum(r["darkness"] < SMUDGE for r in kept) / len(kept), 2) if kept else None,
                    "blurred": round(sum(r["detail"] < BLUR for r in kept) / len(kept), 2) if kept else None})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, required=True, help="frames + masks (Kvasir-SEG layout)")
    parser.add_argument("--bundles", required=True, help="comma list of bundle names or folders")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    add_job_args_option(parser, "'--blend poisson' (the blend before the mucosa detail)")
    args = parser.parse_args()
    results = {}
    for bundle in args.bundles.split(","):
        dataset = run_bundle(bundle, args.frames.resolve(), args.out.resolve() / Path(bundle).name, args.threads,
                             tuple(args.job_args))
        rows = measure_dataset(dataset)
        results[bundle] = {"rows": rows, "by_size": summary(rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "removal_quality.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"{'bundle':28s} {'box share':>11s} {'n':>4s} {'rejected':>9s} {'darkness':>9s} {'detail':>7s} {'smudged':>8s} "
          f"{'blurred':>8s}   (medians and shares of the kept removals)")
    for bundle, result in results.items():
        for row in result["by_size"]:
            if row["darkness"] is None:
                print(f"{Path(bundle).name:28s} {row['area_from']:4.2f}–{row['area_to']:4.2f} {row['removals']:4d} "
                      f"{row['rejected']:9d}   (none kept)")
                continue
            print(f"{Path(bundle).name:28s} {row['area_from']:4.2f}–{row['area_to']:4.2f} {row['removals']:4d} "
                  f"{row['rejected']:9d} {row['darkness']:9.1f} {row['detail']:7.2f} {row['smudged']:8.0%} "
                  f"{row['blurred']:8.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
