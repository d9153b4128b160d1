"""Sample grids and figures of a pixel-inpaint bundle on real frames it was not trained on (a script, not a test).

    python tests/benchmarks/compact_samples.py --data ../shared/data/kvasir-seg --normals ../shared/data/normal \
        --held-out training_runs/compact/model/held_out_frames.txt --out /tmp/compact-eval [--model BUNDLE] [--judge BUNDLE]

Builds a Kvasir-layout folder of the held-out frames (links, nothing copied into the repository), then runs the
batch job on it — add at random masks, remove at the polyps' boxes (Polyp-Gen's 15 px), add at retrieved masks
(a database built from the training frames) — and on the normal frames (add at random masks), and draws one grid
per job: source | region | generated, at the region crop. Prints seconds per image and, with --judge, the judge's
detectability figures from `main.py report`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_jobs import chosen_names, held_out_names, link_frames, ok_records, run_batch  # noqa: E402


def grid(dataset: Path, source_root: Path, picture: Path, rows: int = 10, tile: int = 160) -> int:
    ok = ok_records(dataset)[:rows]
    canvas = Image.new("RGB", (3 * (tile + 4), max(1, len(ok)) * (tile + 4)), "white")
    for row, record in enumerate(ok):
        source = Image.open(source_root / record["source_frame"]).convert("RGB")
        generated = Image.open(dataset / record["image"]).convert("RGB")
        mask = np.asarray(Image.open(dataset / record["mask"])) > 0
        crop = record.get("region_crop") or [0, 0, source.width, source.height]
        outlined = source.copy()
        draw = ImageDraw.Draw(outlined)
        for instance in record["instances"] + record.get("removed", []):
            x, y, w, h = instance["bbox"]
            draw.rectangle([x, y, x + w, y + h], outline=(255, 255, 0), width=2)
        region = np.asarray(source).copy()
        region[mask] = (region[mask] * 0.4 + np.array([0, 255, 0]) * 0.6).astype(np.uint8)
        for column, image in enumerate((outlined, Image.fromarray(region), generated)):
            canvas.paste(image.crop(crop).resize((tile, tile)), (column * (tile + 4), row * (tile + 4)))
    picture.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(picture)
    return len(ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--normals", type=Path)
    parser.add_argument("--held-out", type=Path, required=True, help="file of held-out frame stems")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=REPO / "exported_models" / "polypforge-compact")
    parser.add_argument("--judge", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    names = chosen_names(args.data, held_out_names(args.held_out), args.limit)
    folder = link_frames(args.data, names, args.out / "held-out")
    common = ["--model", str(args.model), "--threads", str(args.threads), "--seed", "0"]
    held_images = folder / "images"
    jobs = {  # name: (job arguments, folder the manifest's source_frame is relative to)
        "add-random": (["--input", str(folder), "--mask-source", "random", "--variants", "1"], held_images),
        "remove-box": (["--input", str(folder), "--mask-source", "box", "--mode", "remove"], held_images),
    }
    if args.normals:
        jobs["normal-add-random"] = (["--input", str(args.normals), "--mask-source", "random", "--variants", "1"], args.normals)
    db = args.out / "train.db"
    if not db.exists():
        completed = subprocess.run([sys.executable, str(REPO / "main.py"), "db", "build", "--polyps", str(args.data),
                                    "--to", str(db)], capture_output=True, text=True)
        if completed.returncode != 0:
            print("retrieval database not built:", completed.stderr[-500:])
    if db.exists():
        target, root = (args.normals, args.normals) if args.normals else (folder, held_images)
        jobs["add-retrieved"] = (["--input", str(target), "--mask-source", "retrieved", "--db", str(db), "--variants", "1"], root)
    figures = {}
    for name, (job, root) in jobs.items():
        output = args.out / name
        summary, seconds = run_batch([*job, *common], output, reuse=False)
        shown = grid(output, Path(root), args.out / f"{name}.png")
        per_image = summary["stage_seconds"].get("unet", 0.0) / max(1, summary["ok"])
        figures[name] = {"ok": summary["ok"], "failed": summary["failed"], "skipped": summary["skipped"],
                         "job_seconds": round(seconds, 1), "unet_seconds_per_image": round(per_image, 3),
                         "grid": str(args.out / f"{name}.png"), "shown": shown}
        if args.judge:
            report = args.out / f"{name}-report"
            subprocess.run([sys.executable, str(REPO / "main.py"), "report", "--real", str(root), "--synthetic", str(output),
                            "--out", str(report), "--judge", str(args.judge)], capture_output=True, text=True)
            if (report / "report.json").is_file():
                figures[name]["detectability"] = json.loads((report / "report.json").read_text()).get("detectability")
        print(name, json.dumps(figures[name]), flush=True)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
