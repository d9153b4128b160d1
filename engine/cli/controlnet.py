"""Command-line wiring of CCIS-Diff controlled generation.

* ``add_export_options(export_parser)`` adds ``--controlnet DIR`` to main.py's existing ``export`` command, and
  ``run_export(args)`` handles an export that names one: ``export --from SD15_DIR --controlnet CN_DIR --to
  BUNDLE`` writes an "sd-controlnet" bundle (engine.export.controlnet_export).
* ``register_commands(subparsers)`` adds ``generate`` (mask + prompt → image, optionally pasted into a frame)
  and returns {command name: handler}; a handler takes the parsed Namespace and returns an exit code, raising
  engine.errors.PolypForgeError subclasses for one-line errors.

Only argparse is imported at module level (torch / onnxruntime inside the handlers): ``main.py --help`` stays
instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from engine.errors import InputError

Handler = Callable[[argparse.Namespace], int]


def add_export_options(export: argparse.ArgumentParser) -> None:
    export.add_argument("--controlnet", type=Path, default=None,
                        help="a diffusers ControlNet folder (CCIS-Diff or plain): with --from an SD-1.5 text-to-image "
                             "folder, writes an sd-controlnet bundle")


def run_export(args: argparse.Namespace) -> int:
    """The export handler when ``--controlnet`` is given (fp32/fp16, opset, name, overwrite as for inpainting)."""
    from engine.export.controlnet_export import export_controlnet_bundle

    if getattr(args, "exporter", "auto") == "optimum":
        raise InputError("--exporter optimum cannot export a ControlNet bundle (no optimum task for it); "
                         "leave --exporter out or pass --exporter torch")
    export_controlnet_bundle(
        args.source, args.controlnet, args.destination, precision="fp16" if getattr(args, "fp16", False) else "fp32",
        opset=getattr(args, "opset", None) or 18, name=getattr(args, "name", None),
        overwrite=getattr(args, "overwrite", False),
    )
    return 0


def register_commands(subparsers) -> dict[str, Handler]:
    generate = subparsers.add_parser(
        "generate",
        help="CCIS-Diff: generate a polyp image from a mask and a clinical text (sd-controlnet bundle)",
        description="Mask + text prompt → image through an sd-controlnet bundle. With --frame, only the masked "
                    "region is pasted into that frame (every pixel outside the mask keeps its bytes).",
    )
    generate.add_argument("--mask", type=Path, required=True, help="polyp mask (white = polyp)")
    generate.add_argument("--model", type=Path, required=True, help="sd-controlnet bundle folder or name")
    generate.add_argument("--out", type=Path, required=True, help="PNG to write")
    generate.add_argument("--prompt", default=None, help="clinical text (default: the bundle's prompt)")
    generate.add_argument("--negative-prompt", default=None)
    generate.add_argument("--frame", type=Path, default=None, help="paste the generated region into this frame")
    generate.add_argument("--steps", type=int, default=None, help="default 20 (DDIM)")
    generate.add_argument("--guidance", type=float, default=None, help="default 7.0")
    generate.add_argument("--scheduler", choices=("ddim", "dpm++"), default=None)
    generate.add_argument("--conditioning-scale", type=float, default=1.0)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    generate.add_argument("--threads", type=int, default=None)
    return {"generate": _run_generate}


def _run_generate(args: argparse.Namespace) -> int:
    from engine.dataset.image_reader import read_frame, read_mask
    from engine.fileio import save_png_atomic
    from engine.pipelines.controlnet import ControlNetPipeline

    mask = read_mask(args.mask)
    frame = read_frame(args.frame) if args.frame is not None else None
    pipeline = ControlNetPipeline.from_bundle(args.model, provider=args.provider, threads=args.threads)
    if pipeline.provider_note:
        print(pipeline.provider_note, file=sys.stderr)
    result = pipeline(
        mask, prompt=args.prompt, negative_prompt=args.negative_prompt, frame=frame, steps=args.steps,
        guidance_scale=args.guidance, scheduler=args.scheduler, seed=args.seed,
        conditioning_scale=args.conditioning_scale,
    )
    save_png_atomic(args.out, result.image)
    print(f"{args.out} ({result.seconds:.2f} s on {pipeline.provider.upper()}, seed {args.seed}, "
          f"prompt {result.settings['prompt']!r})")
    return 0
