"""What the batch-job benchmarks share: held-out frames linked into a small dataset, a batch job run through main.py
(as a curator runs it) unless its summary is already there, and the variants that came out ok.

Used by compact_samples.py, size_bins.py, attribute_readback.py and removal_quality.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def add_job_args_option(parser, example: str = "'--guidance 5'") -> None:
    """The benchmarks' ``--job-args``: further batch-job flags for every job they run, as one string read as a list
    (``args.job_args``; argparse converts the string default too, so it is a list whether given or not)."""
    parser.add_argument("--job-args", type=str.split, default="",
                        help=f"further batch-job flags for every job, e.g. {example}")


def chosen_names(data: Path, wanted: list[str] | None = None, limit: int | None = None) -> list[str]:
    """The file names in data/images in sorted order, only those named in `wanted` (file names or stems) if given;
    the first `limit` of them."""
    names = sorted(p.name for p in (data / "images").iterdir())
    if wanted is not None:
        chosen = set(wanted)
        names = [n for n in names if n in chosen or Path(n).stem in chosen]
    return names[:limit] if limit is not None else names


def link_frames(data: Path, names: list[str], folder: Path) -> Path:
    """The named frames of data/images and their masks (data/masks, same name), linked into folder/images and
    folder/masks. Links already there stay; a frame without a mask is linked without one."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            source = data / sub / name
            target = folder / sub / name
            if source.exists() and not target.exists():
                target.symlink_to(source.resolve())
    return folder


def held_out_names(held_out_file: Path) -> list[str]:
    """A model's held_out_frames.txt: one frame (stem or file name) per line."""
    return [line.strip() for line in held_out_file.read_text(encoding="utf-8").split() if line.strip()]


def run_batch(arguments: list[str], output: Path, reuse: bool = True) -> tuple[dict, float]:
    """`main.py --batch --quiet --fresh [--no-judge] [--no-mucosa-check] --output OUTPUT ARGUMENTS` and its summary.json, with the job's wall time;
    with `reuse`, a job whose summary is already there is not run again (0 s). Exit 1 is a finished job with some
    frames failed (each named in the summary); any other failure stops the benchmark with the job's stderr."""
    if reuse and (output / "summary.json").is_file():
        return json.loads((output / "summary.json").read_text(encoding="utf-8")), 0.0
    started = time.perf_counter()
    # The benchmarks measure the model itself: without the judge the model recommends and without the removals'
    # mucosa check (main.py --batch's defaults), unless the arguments ask for them.
    gate = [] if {"--judge", "--no-judge"} & set(arguments) else ["--no-judge"]
    gate += [] if {"--mucosa-check", "--no-mucosa-check"} & set(arguments) else ["--no-mucosa-check"]
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "--batch", "--quiet", "--fresh", *gate,
                                "--output", str(output), *arguments], capture_output=True, text=True, cwd=REPO_ROOT)
    if completed.returncode not in (0, 1):
        raise SystemExit(f"batch job {output} failed:\n{completed.stderr[-3000:]}")
    seconds = time.perf_counter() - started
    return json.loads((output / "summary.json").read_text(encoding="utf-8")), seconds


def unet_seconds_per_image(summary: dict) -> float:
    return round(summary["stage_seconds"].get("unet", 0.0) / max(1, summary["ok"]), 3)


def ok_records(output: Path) -> list[dict]:
    """The manifest records of a job's variants that came out ok, in the order written."""
    lines = (output / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in (json.loads(line) for line in lines if line.strip()) if r.get("status") == "ok"]
