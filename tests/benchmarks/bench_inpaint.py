#!/usr/bin/env python3
"""Seconds per image for diffusers-PyTorch, optimum's ORTStableDiffusionInpaintPipeline and the PolypForge
engine, side by side in one run on the same weights, inputs and steps, with per-stage times, peak memory and
ratios; plus the engine's opt-in int8-U-Net bundle (speed-up and PSNR against fp32) and the fp32 floor
(the U-Net's FLOPs per step against this machine's measured matmul rate).

    python tests/benchmarks/bench_inpaint.py --size tiny             # seconds
    python tests/benchmarks/bench_inpaint.py --size full             # SD2-inpainting shapes, ~20 minutes

Each contender runs in its own process so that peak RSS is its own. Models, bundles and results are kept
under --workdir (default .bench/) and reused by later runs. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROMPT = "Polyp"


def _inputs(px: int, steps: int):
    """The same frame, mask and initial noise for every contender."""
    import numpy as np

    from engine.samples import generate_frame

    frame, masks = generate_frame(seed=7, width=px, height=px, polyps=1)
    mask = masks[0]
    rows, cols = np.nonzero(mask)
    box = np.zeros_like(mask)
    box[max(0, rows.min() - 15) : rows.max() + 16, max(0, cols.min() - 15) : cols.max() + 16] = True
    latents = np.random.default_rng(11).standard_normal((1, 4, px // 8, px // 8), dtype=np.float32)
    return frame, box, latents


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a
    worker would inherit the orchestrator's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_of(repeats: int, timer, run):
    """(seconds, stage seconds, output) of the fastest of `repeats` runs: single runs here vary by ±5 %."""
    best = None
    for _ in range(repeats):
        timer.reset()
        started = time.perf_counter()
        output = run()
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[0]:
            best = (elapsed, dict(timer.seconds), output)
    return best


class StageTimer:
    """Wraps callables so that time spent in them is summed per stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, stage: str, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
                self.calls[stage] = self.calls.get(stage, 0) + 1

        return timed

    def reset(self):
        self.seconds, self.calls = {}, {}


# --------------------------------------------------------------------------------------------- workers
def worker_diffusers(args) -> dict:
    import numpy as np
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionInpaintPipeline
    from PIL import Image

    torch.set_num_threads(args.threads or torch.get_num_threads())
    frame, mask, latents = _inputs(args.px, args.steps)
    started = time.perf_counter()
    pipe = StableDiffusionInpaintPipeline.from_pretrained(args.pipeline, safety_checker=None, local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - started
    timer = StageTimer()
    pipe.text_encoder.forward = timer.wrap("text_encoder", pipe.text_encoder.forward)
    pipe.unet.forward = timer.wrap("unet", pipe.unet.forward)
    pipe.vae.encode = timer.wrap("vae_encoder", pipe.vae.encode)
    pipe.vae.decode = timer.wrap("vae_decoder", pipe.vae.decode)

    def run(steps, seed):
        with torch.no_grad():
            return pipe(
                prompt=PROMPT, image=Image.fromarray(frame), mask_image=Image.fromarray(mask.astype(np.uint8) * 255),
                height=args.px, width=args.px, num_inference_steps=steps, guidance_scale=7.5,
                latents=torch.from_numpy(latents), generator=torch.Generator().manual_seed(seed), output_type="np",
            ).images[0]

    run(1, 0)  # warm-up
    per_image, stages, image = best_of(args.repeats, timer, lambda: run(args.steps, 0))
    np.save(Path(args.out) / "diffusers.npy", image)
    return {"load_s": load, "per_image_s": per_image, "stages": stages, "peak_rss_mb": _peak_rss_mb()}


def worker_optimum(args) -> dict:
    import numpy as np
    import torch
    from diffusers import DPMSolverMultistepScheduler
    from optimum.onnxruntime import ORTStableDiffusionInpaintPipeline
    from PIL import Image

    frame, mask, latents = _inputs(args.px, args.steps)
    started = time.perf_counter()
    pipe = ORTStableDiffusionInpaintPipeline.from_pretrained(args.optimum_dir, provider="CPUExecutionProvider")
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - started
    timer = StageTimer()
    for stage, part in (("text_encoder", pipe.text_encoder), ("unet", pipe.unet),
                        ("vae_encoder", pipe.vae_encoder), ("vae_decoder", pipe.vae_decoder)):
        part.forward = timer.wrap(stage, part.forward)

    def run(steps, seed):
        return pipe(
            prompt=PROMPT, image=Image.fromarray(frame), mask_image=Image.fromarray(mask.astype(np.uint8) * 255),
            height=args.px, width=args.px, num_inference_steps=steps, guidance_scale=7.5,
            latents=torch.from_numpy(latents), generator=torch.Generator().manual_seed(seed), output_type="np",
        ).images[0]

    run(1, 0)
    per_image, stages, image = best_of(args.repeats, timer, lambda: run(args.steps, 0))
    np.save(Path(args.out) / "optimum.npy", image)
    result = {"load_s": load, "per_image_s": per_image, "stages": stages}
    if args.variants > 1:  # a job with several variants of one frame, the way a plain loop over seeds runs it
        started = time.perf_counter()
        for seed in range(args.variants):
            run(args.steps, seed + 1)
        result["variants_per_image_s"] = (time.perf_counter() - started) / args.variants
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def worker_engine(args) -> dict:
    import numpy as np

    from engine.pipelines.inpaint import InpaintPipeline

    frame, mask, latents = _inputs(args.px, args.steps)
    # diffusers and optimum sample the masked-image posterior with torch's generator (seed 0): same noise here.
    posterior_noise = np.load(Path(args.out) / "posterior_noise.npy")
    started = time.perf_counter()
    pipe = InpaintPipeline.from_bundle(args.bundle, provider="cpu", threads=args.threads)
    load = time.perf_counter() - started
    size = (args.px, args.px)  # the size diffusers and optimum run at
    pipe(frame, mask, steps=1, scheduler="dpm++", guidance_scale=7.5, prompt=PROMPT, latents=latents,
         working_size=size)  # warm-up
    # The prompt was encoded once, at load (the text encoder is then released): in a job that is per job,
    # not per image. Its time is reported as the load-time text stage.
    text_at_load = pipe.stage_seconds["text_encoder"]
    best = None
    for _ in range(args.repeats):
        pipe.reset_stage_seconds()
        started = time.perf_counter()
        result = pipe(frame, mask, steps=args.steps, scheduler="dpm++", guidance_scale=7.5, prompt=PROMPT,
                      latents=latents, masked_image_noise=posterior_noise, working_size=size)
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[0]:
            best = (elapsed, dict(pipe.stage_seconds), result.raw)
    per_image, stages, raw = best
    stages["text_encoder_at_load"] = text_at_load
    np.save(Path(args.out) / f"{args.label}.npy", raw)
    out = {"load_s": load, "per_image_s": per_image, "stages": stages, "provider": pipe.provider}
    if args.variants > 1:
        started = time.perf_counter()
        prepared = pipe.prepare_frame(frame, mask, working_size=size)
        pipe.generate_variants(prepared, seeds=list(range(1, args.variants + 1)), steps=args.steps,
                               scheduler="dpm++", guidance_scale=7.5, prompt=PROMPT, batch_size=args.batch)
        out["variants_per_image_s"] = (time.perf_counter() - started) / args.variants
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def worker_flops(args) -> dict:
    """U-Net FLOPs of one denoising step (batch 2 for guidance), counted by torch's FLOP counter."""
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    unet = UNet2DConditionModel.from_pretrained(str(Path(args.pipeline) / "unet"), local_files_only=True).eval()
    latent = args.px // 8
    sample = torch.randn(2, unet.config.in_channels, latent, latent)
    text = torch.randn(2, 77, unet.config.cross_attention_dim)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(sample, torch.tensor(500.0), text)
    # This machine's fp32 matmul rate (torch, all threads), best of several.
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = float("inf")
    for _ in range(8):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return {
        "unet_flops_per_step": counter.get_total_flops(),
        "matmul_gflops": 2 * 2048**3 / best / 1e9,
        "ort_matmul_gflops": _ort_matmul_gflops(),
    }


def _ort_matmul_gflops(n: int = 2048) -> float:
    """onnxruntime's fp32 MatMul rate here (its MLAS kernels outrun torch's on this CPU)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]), helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = float("inf")
    for _ in range(8):
        started = time.perf_counter()
        session.run(None, {"a": a, "b": a})
        best = min(best, time.perf_counter() - started)
    del onnx
    return 2 * n**3 / best / 1e9


WORKERS = {"diffusers": worker_diffusers, "optimum": worker_optimum, "engine": worker_engine, "flops": worker_flops}


# --------------------------------------------------------------------------------------------- orchestration
def prepare(workdir: Path, size: str, with_int8: bool) -> dict[str, Path]:
    from engine.export.inpaint_export import export_inpaint_bundle
    from engine.export.random_pipeline import build_random_inpaint_pipeline

    base = workdir / size
    paths = {
        "pipeline": base / "pipeline",
        "bundle": base / "bundle",
        "optimum": base / "optimum",
        "int8": base / "bundle-int8",
    }
    if not (paths["pipeline"] / "model_index.json").exists():
        print(f"building a random-weight {size} SD-inpainting pipeline …", flush=True)
        build_random_inpaint_pipeline(paths["pipeline"], size, seed=0)
    if not (paths["bundle"] / "bundle.json").exists():
        print("exporting the PolypForge bundle (main.py export path) …", flush=True)
        export_inpaint_bundle(paths["pipeline"], paths["bundle"], overwrite=True,
                              sampling={"scheduler": "dpm++", "steps": 20, "guidance_scale": 7.5})
    if not (paths["optimum"] / "model_index.json").exists():
        print("exporting optimum's ONNX pipeline folder …", flush=True)
        from optimum.exporters.onnx import main_export

        main_export(str(paths["pipeline"]), output=str(paths["optimum"]), task="inpainting",
                    library_name="diffusers", do_validation=False, device="cpu")
    if with_int8 and not (paths["int8"] / "bundle.json").exists():
        from engine.export.quantize import quantize_unet_int8

        quantize_unet_int8(paths["bundle"], paths["int8"], overwrite=True)
    return paths


def run_worker(kind: str, label: str, args, paths, extra=()) -> dict:
    command = [
        sys.executable, __file__, "--worker", kind, "--label", label, "--px", str(args.px), "--steps", str(args.steps),
        "--variants", str(args.variants), "--batch", str(args.batch), "--repeats", str(args.repeats), "--out", str(args.out),
        "--pipeline", str(paths["pipeline"]), "--optimum-dir", str(paths["optimum"]), *extra,
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    cached = Path(args.out) / f"{label}.json"
    if args.reuse and cached.exists():
        print(f"reusing {cached}", flush=True)
        return json.loads(cached.read_text())
    print(f"running {label} …", flush=True)
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        print(completed.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{label} failed")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    cached.write_text(json.dumps(result))
    return result


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def report(results: dict, args, out: Path) -> None:
    import numpy as np

    names = [n for n in ("diffusers", "optimum", "engine", "engine-int8") if n in results]
    reference = results.get("optimum", results.get("engine"))
    print()
    print(f"size={args.size}  {args.px}×{args.px}  {args.steps} DPM-Solver++ steps  guidance 7.5  "
          f"threads={args.threads or 'default'}  cores={os.cpu_count()}")
    header = f"{'contender':<14}{'s/image':>9}{'vs optimum':>11}{'text':>8}{'vae enc':>9}{'unet':>9}{'unet/step':>10}{'vae dec':>9}{'peak RSS':>10}"
    print(header)
    print("-" * len(header))
    for name in names:
        r = results[name]
        st = r["stages"]
        print(f"{name:<14}{r['per_image_s']:>9.2f}{reference['per_image_s'] / r['per_image_s']:>10.2f}×"
              f"{st.get('text_encoder', 0):>8.2f}{st.get('vae_encoder', 0):>9.2f}{st.get('unet', 0):>9.2f}"
              f"{st.get('unet', 0) / args.steps:>10.3f}{st.get('vae_decoder', 0):>9.2f}{r['peak_rss_mb'] / 1024:>8.2f}GB")
    for name in names:
        at_load = results[name]["stages"].get("text_encoder_at_load")
        if at_load is not None:
            print(f"  ({name}: the prompt is encoded once per job, at load: {at_load:.2f} s; then the text encoder is released)")
    if args.variants > 1:
        print(f"\n{args.variants} variants of one frame, seconds per image:")
        for name in ("optimum", "engine", "engine-int8"):
            if name in results and "variants_per_image_s" in results[name]:
                value = results[name]["variants_per_image_s"]
                base = results["optimum"].get("variants_per_image_s", value) if "optimum" in results else value
                print(f"  {name:<12}{value:>8.2f}   ({base / value:.2f}× vs optimum)")
    if "flops" in results:
        flops = results["flops"]["unet_flops_per_step"]
        torch_rate = results["flops"]["matmul_gflops"]
        rate = max(torch_rate, results["flops"].get("ort_matmul_gflops", 0.0))
        floor = flops / (rate * 1e9)
        print(f"\nU-Net: {flops / 1e9:.1f} GFLOP per step (batch 2);  fp32 2048² matmul here: torch {torch_rate:.0f}, "
              f"onnxruntime {results['flops'].get('ort_matmul_gflops', 0.0):.0f} GFLOP/s;  floor at the faster: {floor:.3f} s/step")
        for name in names:
            per_step = results[name]["stages"].get("unet", 0) / args.steps
            print(f"  {name:<12} U-Net {per_step:.3f} s/step = {per_step / floor:.2f}× the fp32 floor")
    arrays = {name: np.load(out / f"{name}.npy") for name in names if (out / f"{name}.npy").exists()}
    print("\nagreement of decoded images (float, [0,1]):")
    if "engine" in arrays and "diffusers" in arrays:
        print(f"  engine vs diffusers: max |Δ| {np.abs(arrays['engine'] - arrays['diffusers']).max():.2e}")
    if "engine" in arrays and "optimum" in arrays:
        print(f"  engine vs optimum:   max |Δ| {np.abs(arrays['engine'] - arrays['optimum']).max():.2e}")
    if "engine-int8" in arrays and "engine" in arrays:
        print(f"  int8 U-Net vs fp32:  PSNR {psnr(arrays['engine-int8'], arrays['engine']):.1f} dB, "
              f"max |Δ| {np.abs(arrays['engine-int8'] - arrays['engine']).max():.2e}  (opt-in only)")
    (out / f"results-{args.size}.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out / f'results-{args.size}.json'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--px", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1, help="engine variants per U-Net call")
    parser.add_argument("--repeats", type=int, default=2, help="timed images per contender; the fastest counts")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".bench")
    parser.add_argument("--reuse", action="store_true", help="reuse contenders' results saved by an earlier run")
    parser.add_argument("--skip", default="", help="comma list of: diffusers,optimum,int8,flops")
    # worker-only arguments
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--label", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--optimum-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = WORKERS[args.worker](args)
        print(json.dumps(result))
        return 0

    skip = set(filter(None, args.skip.split(",")))
    args.out = args.workdir / args.size / "results"
    args.out.mkdir(parents=True, exist_ok=True)
    paths = prepare(args.workdir, args.size, with_int8="int8" not in skip)
    import numpy as np
    import torch

    noise = torch.randn((1, 4, args.px // 8, args.px // 8), generator=torch.Generator().manual_seed(0)).numpy()
    np.save(args.out / "posterior_noise.npy", noise)
    results = {}
    if "flops" not in skip:
        results["flops"] = run_worker("flops", "flops", args, paths)
    if "diffusers" not in skip:
        results["diffusers"] = run_worker("diffusers", "diffusers", args, paths)
    if "optimum" not in skip:
        results["optimum"] = run_worker("optimum", "optimum", args, paths)
    results["engine"] = run_worker("engine", "engine", args, paths, ["--bundle", str(paths["bundle"])])
    if "int8" not in skip:
        results["engine-int8"] = run_worker("engine", "engine-int8", args, paths, ["--bundle", str(paths["int8"])])
    report(results, args, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
