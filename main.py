#!/usr/bin/env python3
"""PolypForge: grow annotated colonoscopy training sets with diffusion inpainting.

No arguments opens the desktop app; subcommands run headless. Heavy modules (onnxruntime, torch) are
imported only by the command that needs them, so --help and --version answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
EXIT_OK, EXIT_FAILURES, EXIT_CANNOT_START = 0, 1, 2


def _version() -> str:
    from engine import __version__

    return f"PolypForge {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="PolypForge: inpaint synthetic polyps into colonoscopy frames and write annotated datasets.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--batch", action="store_true", help="run a batch job headless (arrives with the batch issue)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    export = commands.add_parser(
        "export",
        help="export a local diffusers inpainting folder to a model bundle",
        description="Export a local diffusers StableDiffusionInpaintPipeline folder (e.g. the Polyp-Gen "
        "checkpoint) to an ONNX model bundle, checking every part against torch. Needs the export extra "
        "(pip install .[export]).",
    )
    export.add_argument("--from", dest="source", required=True, type=Path, help="diffusers pipeline folder")
    export.add_argument("--to", dest="destination", required=True, type=Path, help="bundle folder to write")
    export.add_argument("--fp16", action="store_true", help="fp16 weights, for GPUs (slower on CPU, not faster)")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    export.add_argument("--exporter", choices=("auto", "optimum", "torch"), default="auto",
                        help="auto: optimum, falling back to torch.onnx if optimum fails")
    export.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")

    quantize = commands.add_parser(
        "quantize",
        help="make an int8-U-Net copy of a bundle (faster on CPU, not exact)",
        description="Copy an fp32 bundle with its U-Net's MatMul/Gemm weights dynamically quantised to int8. "
        "Faster on CPU; its images deviate from fp32 (see `make bench` for speed-up and PSNR). Opt-in only.",
    )
    quantize.add_argument("--from", dest="source", required=True, type=Path, help="fp32 bundle folder")
    quantize.add_argument("--to", dest="destination", required=True, type=Path, help="bundle folder to write")
    quantize.add_argument("--overwrite", action="store_true")

    inpaint = commands.add_parser(
        "inpaint",
        help="inpaint one frame at a mask",
        description="Inpaint one frame at a mask and write the result (PNG).",
    )
    inpaint.add_argument("frame", type=Path)
    inpaint.add_argument("--mask", required=True, type=Path, help="mask image (white = region to generate)")
    inpaint.add_argument("--out", required=True, type=Path, help="output PNG")
    _add_generation_options(inpaint)

    demo = commands.add_parser("demo", help="run the demo bundle on generated sample frames")
    demo.add_argument("--samples", type=Path, default=REPO_ROOT / "samples")
    demo.add_argument("--output", type=Path, default=REPO_ROOT / "demo_output")
    demo.add_argument("--variants", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    return parser


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "exported_models" / "demo-sd-inpaint",
                        help="model bundle folder (default: the embedded random-weight demo bundle)")
    parser.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    parser.add_argument("--prompt", default=None, help='default: the bundle\'s "add" prompt ("Polyp")')
    parser.add_argument("--mode", choices=("add", "remove"), default="add",
                        help='add: generate a polyp (prompt "Polyp"); remove: generate mucosa (prompt "Normal")')
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--scheduler", choices=("ddim", "dpm++"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)


def _run_export(args) -> int:
    from engine.export.inpaint_export import export_inpaint_bundle

    export_inpaint_bundle(
        args.source,
        args.destination,
        precision="fp16" if args.fp16 else "fp32",
        opset=args.opset,
        exporter=args.exporter,
        name=args.name,
        overwrite=args.overwrite,
    )
    return EXIT_OK


def _run_quantize(args) -> int:
    from engine.export.quantize import quantize_unet_int8

    quantize_unet_int8(args.source, args.destination, overwrite=args.overwrite)
    return EXIT_OK


def _run_inpaint(args) -> int:
    from engine.fileio import load_frame, load_mask, save_png_atomic
    from engine.pipelines.inpaint import InpaintPipeline

    frame = load_frame(args.frame)
    mask = load_mask(args.mask)
    pipeline = InpaintPipeline.from_bundle(args.model, provider=args.provider, threads=args.threads)
    if pipeline.provider_note:
        print(pipeline.provider_note, file=sys.stderr)
    prompt = args.prompt or pipeline.prompts[args.mode]
    result = pipeline(
        frame, mask, prompt=prompt, steps=args.steps, guidance_scale=args.guidance, scheduler=args.scheduler,
        seed=args.seed,
    )
    save_png_atomic(args.out, result.image)
    print(f"{args.out} ({result.seconds:.2f} s on {pipeline.provider.upper()}, seed {args.seed}, prompt {prompt!r})")
    return EXIT_OK


def _run_demo(args) -> int:
    from engine.demo import run_demo

    run_demo(args.samples, args.output, variants=args.variants, seed=args.seed, provider=args.provider)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch:
        print("main.py --batch: the batch job is not built yet (see the batch issue); use `main.py demo` "
              "or `main.py inpaint`.", file=sys.stderr)
        return EXIT_CANNOT_START
    if args.command is None:
        print("The desktop app is not built yet (see the desktop issue). Headless commands: "
              "`main.py --help`.", file=sys.stderr)
        return EXIT_CANNOT_START
    from engine.errors import PolypForgeError

    handlers = {"export": _run_export, "quantize": _run_quantize, "inpaint": _run_inpaint, "demo": _run_demo}
    try:
        return handlers[args.command](args)
    except PolypForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START


if __name__ == "__main__":
    sys.exit(main())
