#!/usr/bin/env python3
"""Bookkeeping at consortium scale: seconds and peak memory of a job's non-model work at 100k frames.

    python tests/benchmarks/bench_scale.py                          # 10k, 30k and 100k frames (≈ 10 min, ≈ 3 GB of disk)
    python tests/benchmarks/bench_scale.py --sizes 100000 --work /data/bench --keep

For each size, tests/benchmarks/scale_fixture.py writes N tiny frames in nested folders with the job's
output folder inside the input, holding an N-line manifest (last line torn, as a kill leaves it) and the
variant images. Each stage then runs in a fresh process, timed (wall and CPU seconds: on a shared machine
the wall time also counts waiting for the disk and for other processes), with its peak resident memory
(Linux VmHWM, reset at the stage's start) and how far that rose above what the process held before it:

- discovery: ``discover(input, exclude=[output])`` (the output inside the input is not entered);
- planning: ``plan(frames, spec)`` (frame × variant with derived seeds);
- job start: the sweep for temp files a killed run left (``_prepare_output``);
- resume: reading the manifest for what is done (``Manifest.index().done_keys``);
- job end, first: the manifest rewritten in plan order + COCO, YOLO detect, YOLO segment (hard links) and
  the contact sheet written from it, none there yet (each writer's seconds shown);
- job end, again: the same when everything is up to date (the end of a resume, a review's accept/reject).

No model runs. Growth: each stage's seconds per 1000 frames at every size (flat = linear).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = ("discovery", "planning", "job-start", "resume", "job-end-first", "job-end-again")
PRISTINE = "manifest.pristine"  # the fixture's manifest as a killed run left it (the job end rewrites it)


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
    except OSError:
        pass


def run_stage(stage: str, root: Path) -> dict:
    """In this process: set the stage up, then time it and measure its peak memory."""
    import gc

    from engine.dataset.discovery import discover
    from engine.dataset.manifest import Manifest
    from engine.dataset.rebuild import rebuild_outputs
    from engine.jobs.runner import plan
    from engine.jobs.spec import build_spec
    from scale_fixture import build_fixture

    input_dir, output = build_fixture(root, 0, log=None)
    spec = build_spec({"input": input_dir, "output": output, "mask_source": "random"})
    frames = items = None
    if stage in ("planning", "job-end-first", "job-end-again"):
        frames = discover(input_dir, exclude=[output]).frames
    if stage in ("job-end-first", "job-end-again"):
        items = plan(frames, spec)
    if stage == "job-end-first":
        for name in ("annotations", "labels", "yolo-seg"):
            shutil.rmtree(output / name, ignore_errors=True)
        for name in ("data.yaml", "contact_sheet.jpg"):
            (output / name).unlink(missing_ok=True)
    if stage in ("resume", "job-end-first"):
        shutil.copyfile(root / PRISTINE, output / "manifest.jsonl")
    gc.collect()
    before = _status_mb("VmRSS")
    _reset_peak()
    detail: dict = {}
    cpu_before = os.times()
    started = time.perf_counter()
    if stage == "discovery":
        sources = discover(input_dir, exclude=[output])
        detail = {"frames": len(sources.frames)}
    elif stage == "planning":
        detail = {"variants": len(plan(frames, spec))}
    elif stage == "job-start":
        detail = {"temp files": sum(1 for _ in output.rglob(".*.tmp"))}
    elif stage == "resume":
        index = Manifest(output).index()
        detail = {"done": len(index.done_keys(output)), "damaged": index.damaged}
    else:
        manifest = Manifest(output)
        t0 = time.perf_counter()
        tally = manifest.rewrite_in_order(item.key for item in items)
        timings = {"manifest": time.perf_counter() - t0}
        written = rebuild_outputs(output, manifest.records(), ("coco", "yolo", "yolo-seg"),
                                  {f.rel: f.path for f in frames}, timings)
        detail = {"written": written, "lines": sum(tally.counts.values()),
                  "writers_s": {k: round(v, 2) for k, v in timings.items()}}
    seconds = time.perf_counter() - started
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    peak = _status_mb("VmHWM")
    return {"stage": stage, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "peak_mb": peak, "before_mb": before,
            "rise_mb": None if peak is None or before is None else round(peak - before, 1), **detail}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,30000,100000", help="frame counts, comma separated")
    parser.add_argument("--work", type=Path, help="folder for the fixtures (default: a temp folder on this disk)")
    parser.add_argument("--keep", action="store_true", help="keep the fixtures (reused by the next run)")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in this process
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print("RESULT " + json.dumps(run_stage(args.stage, args.root)))
        return 0

    from scale_fixture import build_fixture

    sizes = sorted(int(v) for v in args.sizes.split(","))
    work = args.work or Path(tempfile.mkdtemp(prefix="polypforge-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, dict]] = {}
    try:
        for size in sizes:
            root = work / f"n{size}"
            started = time.perf_counter()
            _, output = build_fixture(root, size, log=print)
            if not (root / PRISTINE).is_file():
                shutil.copyfile(output / "manifest.jsonl", root / PRISTINE)
            print(f"== {size} frames (fixture ready in {time.perf_counter() - started:.0f} s: {root})", flush=True)
            results[size] = {}
            for stage in STAGES:
                completed = subprocess.run([sys.executable, __file__, "--stage", stage, "--root", str(root)],
                                           capture_output=True, text=True, cwd=REPO_ROOT)
                line = next((l for l in completed.stdout.splitlines() if l.startswith("RESULT ")), None)
                if completed.returncode != 0 or line is None:
                    print(completed.stdout[-2000:], completed.stderr[-4000:], file=sys.stderr)
                    raise SystemExit(f"stage {stage} failed at {size} frames")
                result = json.loads(line[len("RESULT "):])
                results[size][stage] = result
                extra = {k: v for k, v in result.items()
                         if k not in ("stage", "seconds", "cpu_s", "peak_mb", "before_mb", "rise_mb")}
                print(f"  {stage:14s} {result['seconds']:8.2f} s ({result['cpu_s']:.2f} s CPU)   peak {result['peak_mb']:7.1f} MB "
                      f"(+{result['rise_mb']:.1f} MB during the stage)   {json.dumps(extra)}", flush=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\nseconds per 1000 frames (flat across sizes = linear):")
    print("stage".ljust(16) + "".join(f"{size:>12d}" for size in sizes))
    for stage in STAGES:
        print(stage.ljust(16) + "".join(f"{results[size][stage]['seconds'] / size * 1000:12.3f}" for size in sizes))
    print("\nCPU seconds (user + system) per 1000 frames (wall time above also waits for the disk and other work):")
    for stage in STAGES:
        print(stage.ljust(16) + "".join(f"{results[size][stage]['cpu_s'] / size * 1000:12.3f}" for size in sizes))
    print("\nmemory rise during the stage, MB (peak − what the process held before it):")
    for stage in STAGES:
        print(stage.ljust(16) + "".join(f"{results[size][stage]['rise_mb']:12.1f}" for size in sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
