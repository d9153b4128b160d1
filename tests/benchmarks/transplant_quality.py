"""How good are transplants? Each blending on the same held-out frames, measured the way the issue asks.

    python tests/benchmarks/transplant_quality.py --data ../shared/data/kvasir-seg \
        --held-out training_runs/compact-anneal/model/held_out_frames.txt --frames 24 \
        --judge exported_models/polyp-judge --out /work/runs/transplant-quality [--strengths 0.3,0.5] [--threads 2]

The input is the held-out frames alone (symlinked, with their masks): they are both the donors and the targets,
as a curator's own small set would be, and the default model never trained on them. Arms: harmonize none
(copy-paste), poisson, and model at each strength; one variant per frame, the same seeds in every arm, so a
row of the grid is the same donor at the same place. Printed:

- variants per second of each arm (the batch job's own wall time, threads as given);
- the project judge's found rate (region IoU ≥ 0.5) on the transplanted polyps, per size bin, next to its rate on
  the real polyps of those frames in the same bin (the ceiling);
- a seam measure: the mean gradient magnitude on a 3-pixel band along the pasted footprint's edge divided by the
  mean in the mucosa just outside it (1 = the seam is no sharper than the tissue around it), and the same ratio
  along each pasted polyp's own outline next to real polyps' outlines in their frames;
- grid.png: source | none | poisson | model at each strength | the label, drawn beside (never over) the lesion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.dataset.image_reader import read_frame, read_mask  # noqa: E402
from engine.jobs import build_spec, run_job  # noqa: E402
from engine.judge.model import Judge  # noqa: E402
from engine.masks.instances import split_instances  # noqa: E402
from engine.masks.size_prior import SIZE_BIN_EDGES, size_bin  # noqa: E402

BINS = ["<2", "2-5", "5-10", "10-20", ">20"]  # percent of the frame (engine.masks.size_prior.size_bin)


def gradient(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))


def edge_ratio(image: np.ndarray, shape: np.ndarray) -> float | None:
    """Mean gradient on a 3-px band along the edge of ``shape`` / mean gradient on the 4-10 px ring outside it."""
    inside = shape.astype(np.uint8)
    band = (cv2.dilate(inside, np.ones((3, 3), np.uint8)) - cv2.erode(inside, np.ones((3, 3), np.uint8))).astype(bool)
    outer = cv2.dilate(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21))).astype(bool)
    near = cv2.dilate(inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))).astype(bool)
    ring = outer & ~near
    if band.sum() < 20 or ring.sum() < 20:
        return None
    g = gradient(image)
    return float(g[band].mean() / max(g[ring].mean(), 1e-3))


def make_input(data: Path, held_out: list[str], count: int, folder: Path) -> list[str]:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    names = []
    for stem in held_out:
        image = next((data / "images").glob(stem + ".*"), None)
        mask = next((data / "masks").glob(stem + ".*"), None)
        if image is None or mask is None:
            continue
        for source, target in ((image, folder / "images" / image.name), (mask, folder / "masks" / mask.name)):
            if not target.exists():
                target.symlink_to(source.resolve())
        names.append(image.name)
        if len(names) == count:
            break
    return names


def run_arm(name: str, values: dict, out: Path) -> tuple[Path, float, int]:
    output = out / name
    spec = build_spec({**values, "output": output, "resume": False}, source=name)
    started = time.perf_counter()
    summary = run_job(spec)
    return output, time.perf_counter() - started, summary.ok


def ok_records(output: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return {r["source_frame"]: r for r in records if r["status"] == "ok"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--held-out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--judge", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--strengths", default="0.3,0.5")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    held_out = [line.strip() for line in args.held_out.read_text().splitlines() if line.strip()]
    frames = make_input(args.data, held_out, args.frames, args.out / "input")
    base = {"input": args.out / "input", "mode": "transplant", "variants": 1, "seed": args.seed,
            "threads": args.threads, "provider": "cpu"}
    arms = {"none": {"harmonize": "none"}, "poisson": {"harmonize": "poisson"}}
    for strength in [float(s) for s in args.strengths.split(",") if s]:
        arms[f"model-{strength:g}"] = {"harmonize": "model", "strength": strength}

    judge = Judge.from_bundle(args.judge, provider="cpu", threads=args.threads)
    rows: dict[str, dict] = {}
    outputs = {}
    for name, extra in arms.items():
        output, seconds, ok = run_arm(name, {**base, **extra}, args.out)
        outputs[name] = output
        found: dict[str, list[bool]] = {b: [] for b in BINS}
        seams, outlines = [], []
        for record in ok_records(output).values():
            image = np.asarray(Image.open(output / record["image"]).convert("RGB"))
            label = np.asarray(Image.open(output / record["mask"])) > 0
            if not label.any():
                continue
            found[size_bin(float(label.mean()))].append(judge.verdict(image, label, "add").found)
            footprint = cv2.dilate(label.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            band = max(3, round(0.12 * 2 * np.sqrt(label.sum() / np.pi)))  # the paste's feathered margin
            footprint = cv2.dilate(label.astype(np.uint8), cv2.getStructuringElement(
                cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))).astype(bool)
            for value, into in ((edge_ratio(image, footprint), seams), (edge_ratio(image, label), outlines)):
                if value is not None:
                    into.append(value)
        rows[name] = {"variants": ok, "seconds": seconds, "per_second": ok / seconds,
                      "found": {b: (sum(v), len(v)) for b, v in found.items()},
                      "seam_ratio": float(np.median(seams)) if seams else None,
                      "outline_ratio": float(np.median(outlines)) if outlines else None}

    real_found: dict[str, list[bool]] = {b: [] for b in BINS}
    real_outlines = []
    for name in frames:
        image = read_frame(args.out / "input" / "images" / name)
        for polyp in split_instances(read_mask(args.out / "input" / "masks" / name)):
            real_found[size_bin(float(polyp.mean()))].append(judge.verdict(image, polyp, "add").found)
            value = edge_ratio(image, polyp)
            if value is not None:
                real_outlines.append(value)

    print(f"{len(frames)} held-out frames; bins {BINS} (edges {SIZE_BIN_EDGES})")
    print("arm           variants/s  found per size bin (found/n)                               seam  outline")
    for name, row in rows.items():
        bins = "  ".join(f"{b}: {f}/{n}" for b, (f, n) in row["found"].items())
        print(f"{name:12s}  {row['per_second']:9.2f}  {bins}  {row['seam_ratio'] or 0:.2f}  {row['outline_ratio'] or 0:.2f}")
    bins = "  ".join(f"{b}: {sum(v)}/{len(v)}" for b, v in real_found.items())
    print(f"{'real polyps':12s}  {'':9s}  {bins}  {'':4s}  {np.median(real_outlines):.2f}")
    summary = {"arms": rows, "real": {"found": {b: (sum(v), len(v)) for b, v in real_found.items()},
                                      "outline_ratio": float(np.median(real_outlines))}, "frames": frames}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    draw_grid(frames, outputs, args.out / "input", args.out / "grid.png")
    print(f"grid: {args.out / 'grid.png'}")
    return 0


def draw_grid(frames: list[str], outputs: dict[str, Path], input_dir: Path, path: Path, height: int = 150) -> None:
    """Rows: a frame; columns: source | each arm | the label (its outline on black, beside the lesion)."""
    records = {name: ok_records(output) for name, output in outputs.items()}
    rows = []
    for frame in frames:
        if not all(frame in r for r in records.values()):
            continue
        cells = [read_frame(input_dir / "images" / frame)]
        label = None
        for name, output in outputs.items():
            record = records[name][frame]
            cells.append(np.asarray(Image.open(output / record["image"]).convert("RGB")))
            label = np.asarray(Image.open(output / record["mask"])) > 0
        outline = np.zeros_like(cells[0])
        contours, _ = cv2.findContours(label.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(outline, contours, -1, (0, 255, 0), 3)
        cells.append(outline)
        scaled = [cv2.resize(c, (round(c.shape[1] * height / c.shape[0]), height), interpolation=cv2.INTER_AREA)
                  for c in cells]
        rows.append(np.hstack(scaled))
    if not rows:
        return
    width = max(r.shape[1] for r in rows)
    grid = np.vstack([np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows])
    header = Image.new("RGB", (width, 18), "white")
    ImageDraw.Draw(header).text((4, 3), " | ".join(["source", *outputs, "label"]), fill="black")
    Image.fromarray(np.vstack([np.asarray(header), grid])).save(path)


if __name__ == "__main__":
    raise SystemExit(main())
