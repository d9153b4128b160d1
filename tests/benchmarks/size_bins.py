#!/usr/bin/env python3
"""Issue 25's proof, per size bin: does a bundle paint polyps the judge finds as often as real ones of that size,
with as much fine detail, at the sizes real polyps have? (A script, not a test: minutes on a CPU.)

    python tests/benchmarks/size_bins.py --data ../shared/data/kvasir-seg \
        --held-out training_runs/compact/model/held_out_frames.txt --bundles polypforge-compact --out OUT

Frames: the held-out list (Kvasir-SEG frames the compact models never trained on; all of them are in the
project judge's validation split too, so neither model saw them). For each bundle:

- **add, per size bin** (< 2, 2–5, 5–10, 10–20, 20–40 % of the frame): the batch job adds one polyp per frame at a
  random mask drawn in that bin (`--sizes LOW-HIGH`), on ``--per-bin`` held-out frames; a grid per bin
  (OUT/<bundle>/grid-add-<bin>.png: source | mask | result, at the region);
- **add, default sizes** (the input's own polyp sizes, as a curator's job draws them): the size histogram of
  the generated polyps next to the real polyps' of the same frames;
- **remove** at every held-out polyp's box: a grid per bin of the removed box.

Measured per bin: the judge's found rate of the generated polyps (IoU ≥ 0.5 at the mask, as `main.py report`)
next to its found rate on the real polyps of that size in the judge's validation frames (never trained on), and
their ratio (issue 25's goal: ≥ 0.8 in every bin); the texture measure — the spread of the region's high-pass
(luma minus a Gaussian of σ 2 px) over that of the mucosa ring around it (removal_quality.measure) — of generated
polyps vs real ones of the bin (1 = as much fine detail relative to the surround as real polyps); for removals,
the share where the judge still sees a polyp. Everything lands in OUT/size_bins.json; a table is printed.
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

from bench_jobs import add_job_args_option, chosen_names, held_out_names, link_frames, ok_records, run_batch, unet_seconds_per_image  # noqa: E402,E501
from compact_samples import grid  # noqa: E402  (sibling benchmark scripts)
from removal_quality import measure  # noqa: E402

BINS = ((0.005, 0.02), (0.02, 0.05), (0.05, 0.10), (0.10, 0.20), (0.20, 0.40))
GOAL_RATIO = 0.8


def bin_label(low: float, high: float) -> str:
    return f"{low * 100:g}-{high * 100:g}"


def bin_of(area: float) -> int | None:
    """The bin of a share of the frame; real polyps above 40 % count in the last bin, below 0.5 % in the first."""
    for index, (low, high) in enumerate(BINS):
        if (index == 0 or area >= low) and (area < high or index == len(BINS) - 1):
            return index
    return None


def judge_variants(judge, output: Path) -> list[dict]:
    """Per ok variant: its region's share of the frame, the judge's verdict there, and the texture measure."""
    from engine.dataset.image_reader import read_frame
    from engine.judge.detectability import judged_as, variant_region
    from engine.judge.scores import judge_region

    rows = []
    for record in ok_records(output):
        region = variant_region(output, record)
        if region is None or not region.any():
            continue
        image = read_frame(output / record["image"])
        view = judge.look(image)
        verdict = judge_region(view.probability, region, judged_as(record), judge.threshold)
        texture = measure(image, region)
        rows.append({"image": record["image"], "area": float(region.mean()), "found": bool(verdict.found),
                     "detail": None if texture is None else texture["detail"]})
    return rows


def judge_real(judge, folder: Path) -> list[dict]:
    """The judge on real frames' own polyps (each connected polyp mask as one), with the texture measure."""
    from engine.dataset.discovery import discover
    from engine.dataset.image_reader import read_frame, read_mask
    from engine.judge.scores import judge_region

    rows = []
    for frame in discover(folder).frames:
        if frame.mask_path is None:
            continue
        image = read_frame(frame.path)
        truth = read_mask(frame.mask_path) > 0
        if truth.shape != image.shape[:2] or not truth.any():
            continue
        view = judge.look(image)
        verdict = judge_region(view.probability, truth, "add", judge.threshold)
        texture = measure(image, truth)
        rows.append({"frame": frame.rel, "area": float(truth.mean()), "found": bool(verdict.found),
                     "detail": None if texture is None else texture["detail"]})
    return rows


def _rate(rows: list[dict]) -> float | None:
    return round(sum(r["found"] for r in rows) / len(rows), 3) if rows else None


def _median_detail(rows: list[dict]) -> float | None:
    values = [r["detail"] for r in rows if r["detail"] is not None]
    return round(float(np.median(values)), 3) if values else None


def histogram(areas: list[float]) -> list[int]:
    counts = [0] * len(BINS)
    for area in areas:
        index = bin_of(area)
        if index is not None:
            counts[index] += 1
    return counts


def quantiles(areas: list[float]) -> dict:
    if not areas:
        return {}
    q = np.percentile(np.asarray(areas) * 100, [25, 50, 75, 90])
    return {"p25": round(float(q[0]), 2), "median": round(float(q[1]), 2), "p75": round(float(q[2]), 2),
            "p90": round(float(q[3]), 2), "n": len(areas)}


def removal_grids(output: Path, rows: list[dict], sources: Path, out: Path) -> None:
    """One grid per size bin of the removed boxes: each bin's records as a small dataset of links to the job's."""
    records = ok_records(output)
    for index, (low, high) in enumerate(BINS):
        keep = {Path(r["image"]).name for r in rows if bin_of(r["area"]) == index}
        chosen = [r for r in records if Path(r["image"]).name in keep]
        if not chosen:
            continue
        label = bin_label(low, high)
        sub = out / f"remove-{label}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen), encoding="utf-8")
        for record in chosen:  # the grid reads images and masks relative to the dataset folder
            for key in ("image", "mask"):
                target = sub / record[key]
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.symlink_to((output / record[key]).resolve())
        grid(sub, sources, out / f"grid-remove-{label}.png", rows=len(chosen))


def measure_bundle(bundle: str, held: Path, per_bin: int, out: Path, judge, threads: int, seed: int,
                   bins: tuple[tuple[float, float], ...] = BINS, extra: list[str] = (), add_only: bool = False) -> dict:
    common = ["--model", bundle, "--threads", str(threads), "--seed", str(seed), "--variants", "1", *extra]
    names = sorted(p.name for p in (held / "images").iterdir())
    result = {"add": [], "remove": [], "default_sizes": {}}
    out.mkdir(parents=True, exist_ok=True)
    split = out / f"first-{per_bin}.tsv"  # each bin's job reads the first --per-bin frames
    split.write_text("".join(f"{n}\t{'train' if i < per_bin else 'test'}\n" for i, n in enumerate(names)),
                     encoding="utf-8")
    for low, high in bins:
        label = bin_label(low, high)
        output = out / f"add-{label}"
        summary, _ = run_batch(["--input", str(held), "--mask-source", "random", "--sizes", label, "--split-file",
                                str(split), "--from-splits", "train", *common], output)
        rows = judge_variants(judge, output)
        grid(output, held / "images", out / f"grid-add-{label}.png", rows=per_bin)
        result["add"].append({"bin": label, "planned": summary["planned"], "ok": summary["ok"], "rows": rows,
                              "unet_seconds_per_image": unet_seconds_per_image(summary)})
    if add_only:
        result["default_sizes"] = {"generated": []}
        return result
    output = out / "add-default-sizes"
    run_batch(["--input", str(held), "--mask-source", "random", *common], output)
    generated = [r["area"] for r in judge_variants(judge, output)]
    result["default_sizes"] = {"generated": generated}
    output = out / "remove"
    run_batch(["--input", str(held), "--mask-source", "box", "--mode", "remove", *common], output)
    removal_rows = judge_variants(judge, output)
    removal_grids(output, removal_rows, held / "images", out)
    result["remove"] = removal_rows
    return result


def summarise(result: dict, real: list[dict], held_real: list[dict]) -> dict:
    table = []
    for index, (low, high) in enumerate(BINS):
        label = bin_label(low, high)
        add = next((a for a in result["add"] if a["bin"] == label), None)
        rows = add["rows"] if add else []
        real_rows = [r for r in real if bin_of(r["area"]) == index]
        removals = [r for r in result["remove"] if bin_of(r["area"]) == index]
        generated_rate, real_rate = _rate(rows), _rate(real_rows)
        generated_detail, real_detail = _median_detail(rows), _median_detail(real_rows)
        table.append({
            "bin": label, "variants": len(rows), "found_rate": generated_rate, "real_polyps": len(real_rows),
            "real_found_rate": real_rate,
            "ratio": round(generated_rate / real_rate, 2) if generated_rate is not None and real_rate else None,
            "detail": generated_detail, "real_detail": real_detail,
            "detail_ratio": round(generated_detail / real_detail, 2) if generated_detail and real_detail else None,
            "removals": len(removals), "still_found_after_removal": _rate(removals),
            "unet_seconds_per_image": add["unet_seconds_per_image"] if add else None})
    generated = result["default_sizes"]["generated"]
    real_areas = [r["area"] for r in held_real]
    return {"by_bin": table,
            "size_histogram": {"bins": [bin_label(*b) for b in BINS], "generated": histogram(generated),
                               "real": histogram(real_areas), "generated_percent": quantiles(generated),
                               "real_percent": quantiles(real_areas)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Kvasir-SEG (images/, masks/)")
    parser.add_argument("--held-out", type=Path, required=True, help="file of held-out frame stems")
    parser.add_argument("--bundles", default="polypforge-compact", help="comma list of bundle names or folders")
    parser.add_argument("--judge", type=Path, default=REPO_ROOT / "exported_models" / "polyp-judge")
    parser.add_argument("--per-bin", type=int, default=16, help="held-out frames per size bin (default 16)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--add-only", action="store_true", help="only the add jobs per bin (no removal, no "
                        "default-size job)")
    add_job_args_option(parser, "'--steps 10'")
    parser.add_argument("--bins", default=",".join(bin_label(*b) for b in BINS),
                        help="the add jobs' bins, a comma list of them (default: all)")
    args = parser.parse_args()
    bins = tuple(b for b in BINS if bin_label(*b) in args.bins.split(","))
    from engine.judge.model import Judge

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = args.data.resolve()
    stems = held_out_names(args.held_out)
    held = link_frames(data, chosen_names(data, stems), out / "held-out")
    judge = Judge.from_bundle(args.judge, provider="cpu", threads=args.threads)
    bundle_json = json.loads((args.judge / "bundle.json").read_text(encoding="utf-8"))
    validation = bundle_json["training"]["split"]["val_names"]
    real = judge_real(judge, link_frames(data, validation, out / "judge-validation"))
    held_real = [r for r in real if Path(r["frame"]).stem in set(stems)]
    results = {"real": real, "bundles": {}}
    for bundle in args.bundles.split(","):
        measured = measure_bundle(bundle, held, args.per_bin, out / Path(bundle).name, judge, args.threads, args.seed,
                                  bins, args.job_args, args.add_only)
        results["bundles"][bundle] = {"measured": measured, "summary": summarise(measured, real, held_real)}
    (out / "size_bins.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"real polyps: {len(real)} in the judge's validation frames (never trained on)")
    header = (f"{'bundle':22s} {'bin %':>7s} {'n':>3s} {'found':>6s} {'real':>6s} {'ratio':>6s} {'detail':>7s} "
              f"{'real':>6s} {'ratio':>6s} {'rm n':>5s} {'rm still':>8s} {'s/img':>6s}")
    print(header)
    for bundle, result in results["bundles"].items():
        for row in result["summary"]["by_bin"]:
            cells = [row["variants"], row["found_rate"], row["real_found_rate"], row["ratio"], row["detail"],
                     row["real_detail"], row["detail_ratio"], row["removals"], row["still_found_after_removal"],
                     row["unet_seconds_per_image"]]
            text = " ".join(f"{'–' if c is None else c!s:>6s}" for c in cells)
            print(f"{Path(bundle).name:22s} {row['bin']:>7s} {text}")
        histogram_ = result["summary"]["size_histogram"]
        print(f"{Path(bundle).name:22s} sizes (% of frame) generated {histogram_['generated_percent']} "
              f"counts {histogram_['generated']}; real {histogram_['real_percent']} counts {histogram_['real']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
