"""Benchmark (not a test) of the Ray backend: frames per minute with 1 and 2 CPU workers on the demo bundle
against a local run, Ray's startup overhead, and what 100k frames would cost on N GPUs.

    python tests/benchmarks/bench_ray.py [--frames 12] [--variants 1] [--steps 4] [--gpu-seconds-per-image S]

Measured here: a local run (this process, all cores), then on a local Ray instance (started once; its start
is timed) 1 worker × 2 threads and 2 workers × 1 thread. For each: wall time of the whole job, time to its
first result (Ray: actors start and load the bundle), and steady frames/min between the first and the last
result. The projection uses a per-image GPU time: --gpu-seconds-per-image when you have measured one (e.g.
`main.py inpaint` on the GPU with the real bundle), else the published figure named below.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Published: fal-ai/stable-diffusion-benchmarks (GitHub), one A100 80 GB SXM, Stable Diffusion 1.5 at 512×512,
# 50 steps with classifier-free guidance, diffusers (torch 2.1, SDPA): 1.604 s per image (31.19 it/s). The
# SD-2 inpainting U-Net of Polyp-Gen has the same size (its 9 input channels add nothing measurable); our
# exported bundles default to 50 DDIM steps, so the figure is used as is.
PUBLISHED_GPU_SECONDS_PER_IMAGE = 1.604
PUBLISHED_SOURCE = "fal-ai/stable-diffusion-benchmarks: A100 80GB SXM, SD-1.5 512², 50 steps + CFG, diffusers SDPA"


def run(spec_values: dict, output: Path) -> dict:
    from engine.jobs import build_spec, run_job

    started = time.perf_counter()
    result_times: list[float] = []

    def on_event(event):
        if event.kind in ("variant", "failed", "skipped"):
            result_times.append(time.perf_counter() - started)

    summary = run_job(build_spec({**spec_values, "output": output}), on_event=on_event)
    wall = time.perf_counter() - started
    frames = len({json.loads(line)["source_frame"] for line in (output / "manifest.jsonl").read_text().splitlines()})
    variants_per_frame = spec_values["variants"]
    first, last = result_times[0], result_times[-1]
    # Results of a frame arrive together (Ray) or one by one (local): count whole frames after the first.
    steady_frames = (len(result_times) - variants_per_frame) / variants_per_frame
    return {
        "status": summary.status,
        "frames": frames,
        "wall_s": round(wall, 2),
        "first_result_s": round(first, 2),
        "frames_per_min": round(60 * frames / wall, 2),
        "steady_frames_per_min": round(60 * steady_frames / (last - first), 2) if last > first else None,
        "workers": summary.workers,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--variants", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--gpu-seconds-per-image", type=float, default=None,
                        help=f"measured per-image GPU time (default: published {PUBLISHED_GPU_SECONDS_PER_IMAGE} s)")
    parser.add_argument("--gpus", default="1,8,32", help="GPU counts to project for")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)

    import ray

    from engine.samples import generate_sample_set

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    generate_sample_set(work / "in", count=args.frames, seed=0, with_polyps_every=0)
    job = {"input": work / "in", "mask_source": "random", "variants": args.variants, "steps": args.steps, "seed": 0}
    cpus = os.cpu_count() or 1
    results: dict = {"load_average_at_start": os.getloadavg(), "cpus": cpus, "job": {k: str(v) for k, v in job.items()}}
    print(f"{args.frames} frames × {args.variants} variant(s), {args.steps} steps, demo bundle; "
          f"{cpus} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)

    results["local"] = run({**job, "threads": cpus}, work / "local")
    print(f"local, {cpus} threads: {results['local']}", flush=True)

    os.environ["RAY_worker_niceness"] = "0"  # as the backend starts its own local instance
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR)
    results["ray_init_s"] = round(time.perf_counter() - t0, 2)
    print(f"ray.init (local instance): {results['ray_init_s']} s", flush=True)
    for workers, threads in ((1, cpus), (cpus, 1)):
        key = f"ray_{workers}x{threads}"
        results[key] = run({**job, "backend": "ray", "workers": workers, "threads": threads}, work / key)
        print(f"ray, {workers} worker(s) × {threads} thread(s): {results[key]}", flush=True)
    ray.shutdown()

    local, one, two = results["local"], results[f"ray_1x{cpus}"], results[f"ray_{cpus}x1"]
    # What Ray adds per job on top of a local run: the actors' start and bundle load before the first result.
    results["ray_job_start_overhead_s"] = round(one["first_result_s"] - local["first_result_s"], 2)
    seconds_per_image = args.gpu_seconds_per_image or PUBLISHED_GPU_SECONDS_PER_IMAGE
    source = "measured (--gpu-seconds-per-image)" if args.gpu_seconds_per_image else PUBLISHED_SOURCE
    # Ray's scheduling cost per frame: how long the single worker idles between frames (the interval between
    # its results minus its own busy time per frame). Its busy time itself is longer than a local run's on a
    # small CPU, where Ray's own processes (raylet, GCS, the driver's executor) take a share of the cores:
    # stated, not projected (GPU workers are GPU-bound).
    (solo,) = one["workers"]
    busy_per_frame = solo["busy_seconds"] / solo["frames"]
    interval = 60 / one["steady_frames_per_min"] if one["steady_frames_per_min"] else busy_per_frame
    per_frame_overhead = max(0.0, interval - busy_per_frame)
    results["worker_busy_s_per_frame"] = round(busy_per_frame, 3)
    results["local_s_per_frame"] = round(60 / local["steady_frames_per_min"], 3) if local["steady_frames_per_min"] else None
    projection = []
    frames = 100_000
    for gpus in (int(g) for g in args.gpus.split(",")):
        gpu_seconds = frames * args.variants * seconds_per_image
        wall = results["ray_init_s"] + results["ray_job_start_overhead_s"] + (gpu_seconds + frames * per_frame_overhead) / gpus
        projection.append({"gpus": gpus, "gpu_hours": round((gpu_seconds + frames * per_frame_overhead) / 3600, 1),
                           "wall_hours": round(wall / 3600, 2)})
    results["projection_100k_frames"] = {"seconds_per_image": seconds_per_image, "source": source,
                                         "ray_seconds_per_frame_overhead": round(per_frame_overhead, 3),
                                         "by_gpus": projection}
    print(f"Ray start-up: ray.init {results['ray_init_s']} s, then {results['ray_job_start_overhead_s']} s more "
          f"than a local run before a job's first result (actors start, each loads the bundle)")
    print(f"a worker's busy time per frame {results['worker_busy_s_per_frame']} s, a local run's "
          f"{results['local_s_per_frame']} s; the worker idled {per_frame_overhead:.3f} s between frames")
    print(f"100k frames × {args.variants} variant(s) at {seconds_per_image} s/image ({source}), "
          f"+{per_frame_overhead:.3f} s/frame scheduling:")
    for row in projection:
        print(f"  {row['gpus']:>3} GPU(s): {row['gpu_hours']} GPU-hours, {row['wall_hours']} h wall")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
