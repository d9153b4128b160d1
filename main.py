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
EXIT_OK, EXIT_FAILURES, EXIT_CANNOT_START, EXIT_CANCELLED = 0, 1, 2, 130
RETRIEVAL_HANDLERS: dict = {}  # export-features, db, propose: registered by engine.cli.retrieval
DOCTOR_HANDLERS: dict = {}  # doctor: registered by engine.cli.doctor
REPORT_HANDLERS: dict = {}  # report: registered by engine.cli.report
CONTROLNET_HANDLERS: dict = {}  # generate: registered by engine.cli.controlnet
TRAINING_HANDLERS: dict = {}  # train: registered by engine.cli.train
CAPTION_HANDLERS: dict = {}  # caption: registered by engine.cli.caption
EVALUATION_HANDLERS: dict = {}  # train-judge, evaluate: registered by engine.cli.evaluate
# engine.pipelines.blending.BLEND_MODES, spelt out so --help does not import numpy (tests/test_blending.py checks)
BLEND_MODES = ("feather", "poisson", "mucosa")
BLEND_HELP = ("paste the generated region with a feathered edge; Poisson-blended into the frame; or Poisson-blended "
              "with the fine texture of the mucosa around it carried in (default: mucosa when removing, feather when "
              "adding)")


def _version() -> str:
    from engine import __version__

    return f"PolypForge {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        allow_abbrev=False,
        description="PolypForge: inpaint synthetic polyps into colonoscopy frames and write annotated datasets.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--batch", action="store_true",
                        help="run a batch job headless: a folder of frames → an annotated, resumable dataset")
    _add_batch_options(parser.add_argument_group("batch job (with --batch; each may also be a key of --job FILE)"))
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    export = commands.add_parser(
        "export",
        help="export a local diffusers inpainting folder (or SD-1.5 + --controlnet) to a model bundle",
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
    from engine.cli.controlnet import add_export_options
    from engine.cli.controlnet import register_commands as register_controlnet_commands

    add_export_options(export)  # --controlnet DIR: an SD-1.5 folder + a CCIS ControlNet → "sd-controlnet" bundle

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
    # From a source checkout the demo writes beside main.py; from the built app, in the current folder.
    demo_root = Path.cwd() if getattr(sys, "frozen", False) else REPO_ROOT
    demo.add_argument("--samples", type=Path, default=demo_root / "samples")
    demo.add_argument("--output", type=Path, default=demo_root / "demo_output")
    demo.add_argument("--variants", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")

    from engine.cli.retrieval import register_commands  # argparse only: keeps --help instant

    RETRIEVAL_HANDLERS.update(register_commands(commands))
    from engine.cli.doctor import register_commands as register_doctor_commands

    DOCTOR_HANDLERS.update(register_doctor_commands(commands))
    from engine.cli.report import register_commands as register_report_commands

    REPORT_HANDLERS.update(register_report_commands(commands))
    CONTROLNET_HANDLERS.update(register_controlnet_commands(commands))
    from engine.cli.train import register_commands as register_training_commands

    TRAINING_HANDLERS.update(register_training_commands(commands))
    from engine.cli.caption import register_commands as register_caption_commands

    CAPTION_HANDLERS.update(register_caption_commands(commands))
    from engine.cli.evaluate import register_commands as register_evaluation_commands

    EVALUATION_HANDLERS.update(register_evaluation_commands(commands))
    return parser


def _add_batch_options(group) -> None:
    # Defaults are None so that a job file's values stand unless a flag is given.
    group.add_argument("--job", type=Path, help="TOML job file (keys as the flags, with _ for -)")
    group.add_argument("--input", type=Path, help="folder of frames (Kvasir-SEG images/+masks/ found by itself)")
    group.add_argument("--output", type=Path, help="dataset folder to write (resumed if it holds this job)")
    group.add_argument("--model", type=Path, help="model bundle (default: polypforge-compact, the compact polyp model)")
    group.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"))
    group.add_argument("--threads", type=int, help="onnxruntime threads (with --backend ray: per worker)")
    group.add_argument("--masks", type=Path, help="masks folder, paired with frames by file name")
    group.add_argument("--labels", type=Path, help="labels file (COCO json or kavsir_bboxes.json)")
    group.add_argument("--split-file", type=Path, help="lines 'PATH_OR_STEM SPLIT'; unlisted frames are left out")
    group.add_argument("--from-splits", help="splits to derive variants from (default train; written to their own split)")
    group.add_argument("--mask-source", choices=("user", "box", "random", "retrieved"),
                       help="where each variant is painted: random (new polyps on free mucosa beside the frame's own, "
                       "whose labels are kept), user (the frame's own masks: an add paints over the real polyp), box "
                       "(the box around each polyp), retrieved (--db) (default: random to add, user to remove or "
                       "transplant)")
    group.add_argument("--sizes", help="new polyps' sizes (random masks, transplants): all (default: the input's own polyps', else the "
                       "Kvasir-SEG prior), small (< 5 %% of the frame), large (> 20 %%) or a range of percent "
                       "of the frame such as 2-10")
    group.add_argument("--attributes", help="what a bundle trained with attributes is asked per variant (mode add): "
                       "auto (default: drawn from the input's own polyps, else the Kvasir-SEG prior; nothing for a "
                       "bundle without attributes), none, or words such as red,lobulated (colour: pale, pink, red, "
                       "whitish; surface: smooth, lobulated, irregular; elevation: flat, raised); size and outline "
                       "come from each variant's mask")
    group.add_argument("--db", type=Path, help="retrieval database (for --mask-source retrieved)")
    group.add_argument("--top-k", type=int, help="retrieval candidates per frame (default 5)")
    group.add_argument("--box-pad", type=int, help="pixels added around boxes (default 15, as Polyp-Gen)")
    group.add_argument("--mode", choices=("add", "remove", "transplant"),
                       help='add: generate a polyp in the mask ("Polyp"); remove: generate mucosa ("Normal"); '
                       "transplant: move one of the input's own annotated polyps (train frames) to free mucosa")
    group.add_argument("--harmonize", choices=("none", "poisson", "model"),
                       help="transplant: how the moved polyp joins its place — none (copy-paste with a soft margin), "
                       "poisson, or model (default: the model redraws the paste and a band around it at --strength)")
    group.add_argument("--strength", type=float,
                       help="transplant with --harmonize model: how far the paste is re-noised, 0-1 (default 0.4)")
    group.add_argument("--prompt", help="override the mode's prompt")
    group.add_argument("--negative-prompt")
    group.add_argument("--captions", type=Path,
                       help="per-frame prompts for an sd-controlnet or pixel-controlnet bundle: CSV (frame,text) "
                            "or JSONL, keyed by frame stem")
    group.add_argument("--variants", type=int, help="variants per frame (default 1)")
    group.add_argument("--seed", type=int, help="job seed (default 0); each variant's seed derives from it")
    group.add_argument("--steps", type=int)
    group.add_argument("--scheduler", choices=("ddim", "dpm++"))
    group.add_argument("--guidance", type=float)
    group.add_argument("--guidance-interval", metavar="A-B",
                       help="a compact bundle: guide only from the A to the B share of the steps (0 = the noisiest; "
                       "e.g. 0.3-1), one U-Net prediction a step on the others (default: every step)")
    group.add_argument("--attribute-guidance", type=float,
                       help="a bundle trained with attributes: guide the asked attributes this hard, apart from "
                       "--guidance (e.g. 5; three U-Net predictions a step instead of two; default: as hard as "
                       "--guidance)")
    group.add_argument("--attribute-guidance-until", type=float,
                       help="with --attribute-guidance: guide the attributes apart on this share of the steps, the "
                       "noisiest (0-1; the rest as one guided pair, two predictions a step; default: the model's, "
                       "see docs/batch-job.md)")
    group.add_argument("--formats", help="comma list of coco, yolo, yolo-seg (default all)")
    group.add_argument("--batch-size", type=int, help="variants per U-Net call (GPU)")
    group.add_argument("--inpaint-area", choices=("frame", "region"),
                       help="the model sees the whole frame, or the region around the mask (default: the bundle's)")
    group.add_argument("--region-padding", type=int,
                       help="pixels around the mask's box in region mode (default: 30 %% of the box's longer side)")
    group.add_argument("--working-size", type=int,
                       help="the model works at about N×N pixels of its view (default: the bundle's image size, 64 "
                            "for the compact model); e.g. 96 paints large polyps with more detail, about 2× slower")
    group.add_argument("--blend", choices=BLEND_MODES, help=BLEND_HELP)
    group.add_argument("--backend", choices=("local", "ray"),
                       help="local: this process (default); ray: frames sharded over Ray actors (pip install -e \".[ray]\")")
    group.add_argument("--ray-address", help="join this Ray cluster (default: $RAY_ADDRESS, else a local Ray instance)")
    group.add_argument("--workers", type=int, help="Ray workers (default: as many as the cluster's CPUs or GPUs hold)")
    group.add_argument("--gpus-per-worker", type=float, help="GPUs each Ray worker takes (default 0: CPU workers)")
    resume = group.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=None,
                        help="continue an interrupted job in --output (default)")
    resume.add_argument("--fresh", dest="resume", action="store_false", help="discard what --output holds of an earlier job")
    group.add_argument("--include-synthetic", action="store_true", default=None,
                       help="also use the variants of earlier PolypForge outputs in --input as source frames "
                       "(their manifest lines are recorded as the source); without it they are never read")
    group.add_argument("--break-lock", action="store_true", default=None,
                       help="take over --output's job.lock even if its holder may still be running "
                       "(a lock of a process that is gone is taken over without it)")
    judging = group.add_mutually_exclusive_group()
    judging.add_argument("--judge", type=Path,
                         help="a segmenter bundle (e.g. polyp-judge): variants it disagrees with are rejected "
                         "(default: the judge the model recommends for the mode, if any: the default model's polyp "
                         "judge for mode add, up to 4 attempts per variant)")
    judging.add_argument("--no-judge", dest="model_judge", action="store_false", default=None,
                         help="keep every variant, also those the model's recommended judge does not find (job file: "
                         "model_judge = false)")
    group.add_argument("--min-judge-score", type=float,
                       help="judge score a variant needs (0..1, default 0.5; add: mean judge probability over the "
                       "generated polyp, remove: 1 − the peak probability where the polyp was)")
    group.add_argument("--max-attempts", type=int, help="with a judge or the mucosa check: generations per "
                       "variant, the next seeds after a rejection (default 1; with the model's recommended judge, its "
                       "count: 4 for the default model, more if asked; removals with the mucosa check: 4)")
    checking = group.add_mutually_exclusive_group()
    checking.add_argument("--mucosa-check", dest="mucosa_check", action="store_true", default=None,
                          help="mode remove: paint a removal again when its fill is more than 15 luma levels darker "
                          "than the mucosa around it (a dark smudge), up to --max-attempts (default 4), then write it "
                          "to rejected/ (the default)")
    checking.add_argument("--no-mucosa-check", dest="mucosa_check", action="store_false",
                          help="keep every removal as first painted (job file: mucosa_check = false)")
    group.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    group.add_argument("--json-summary", type=Path, help="write the job summary as JSON here too")


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="model bundle folder or name (default: polypforge-compact, the compact polyp model)")
    parser.add_argument("--provider", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    parser.add_argument("--prompt", default=None, help='default: the bundle\'s "add" prompt ("Polyp")')
    parser.add_argument("--mode", choices=("add", "remove"), default="add",
                        help='add: generate a polyp (prompt "Polyp"); remove: generate mucosa (prompt "Normal")')
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--scheduler", choices=("ddim", "dpm++"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--inpaint-area", choices=("frame", "region"), default=None,
                        help="the model sees the whole frame, or the region around the mask (default: the bundle's)")
    parser.add_argument("--region-padding", type=int, default=None, help="pixels around the mask's box in region mode")
    parser.add_argument("--blend", choices=BLEND_MODES, default=None, help=BLEND_HELP)


def _run_export(args) -> int:
    if getattr(args, "controlnet", None) is not None:
        from engine.cli.controlnet import run_export

        return run_export(args)
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
    from engine.dataset.image_reader import read_frame, read_mask
    from engine.errors import InputError
    from engine.fileio import save_png_atomic
    from engine.jobs.spec import DEFAULT_MODEL
    from engine.pipelines import open_pipeline

    frame = read_frame(args.frame)
    mask = read_mask(args.mask)
    pipeline = open_pipeline(args.model or DEFAULT_MODEL, provider=args.provider, threads=args.threads,
                             purpose="inpaint")
    if pipeline.provider_note:
        print(pipeline.provider_note, file=sys.stderr)
    prompt = args.prompt or pipeline.prompts.get(args.mode)
    if prompt is None:  # a pixel-controlnet bundle only adds polyps
        raise InputError(f"{pipeline.bundle.root}: a {pipeline.bundle.kind} bundle has no {args.mode} mode; "
                         "use an sd-inpaint or pixel-inpaint bundle")
    result = pipeline(
        frame, mask, prompt=prompt, steps=args.steps, guidance_scale=args.guidance, scheduler=args.scheduler,
        seed=args.seed, inpaint_area=args.inpaint_area, region_padding=args.region_padding, blend=args.blend,
    )
    save_png_atomic(args.out, result.image)
    print(f"{args.out} ({result.seconds:.2f} s on {pipeline.provider.upper()}, seed {args.seed}, prompt {prompt!r})")
    return EXIT_OK


def batch_flag_values(args: argparse.Namespace) -> dict:
    """The JobSpec keys given on the command line: every JobSpec field is a --batch flag of the same name
    (--top-k → top_k), and a flag left out is None, so a job file's value for it stands."""
    from dataclasses import fields

    from engine.jobs import JobSpec

    values = {spec_field.name: getattr(args, spec_field.name, None) for spec_field in fields(JobSpec)}
    return {key: value for key, value in values.items() if value is not None}


def _run_batch(args) -> int:
    from engine.jobs import build_spec, read_job_file

    values = read_job_file(args.job) if args.job else {}
    values.update(batch_flag_values(args))
    values.setdefault("model_judge", True)  # the model's recommended judge, unless the job file or --no-judge says not
    values.setdefault("mucosa_check", True)  # removals' dark fills painted again, unless --no-mucosa-check says not
    spec = build_spec(values, str(args.job) if args.job else "command line")
    return _run_job_in_terminal(spec, quiet=args.quiet, json_summary=args.json_summary)


def _run_job_in_terminal(spec, quiet: bool = False, json_summary: Path | None = None) -> int:
    from engine.jobs import JobCannotStart, run_job
    from engine.jobs.terminal_progress import BatchProgress

    progress = BatchProgress(quiet=quiet)
    try:
        summary = run_job(spec, on_event=progress.on_event, cancel=progress.cancel_requested)
    except JobCannotStart as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    finally:
        progress.close()
    progress.print_summary(summary)
    if json_summary:
        import json

        from engine.fileio import atomic_write_bytes

        atomic_write_bytes(json_summary, (json.dumps(summary.to_json(), indent=1, ensure_ascii=False) + "\n").encode())
    return {"ok": EXIT_OK, "failures": EXIT_FAILURES, "cancelled": EXIT_CANCELLED}[summary.status]


def _run_demo(args) -> int:
    from engine.demo import DEMO_JOBS, demo_specs, write_demo_sheet

    specs = demo_specs(args.samples, args.output, variants=args.variants, seed=args.seed, provider=args.provider)
    print(f"sample frames (generated, no patient data): {args.samples.resolve()}", file=sys.stderr)
    print(f"model: {specs['add'].model.name} (PolypForge's compact polyp model, trained on Kvasir-SEG; research use "
          "only, see its MODEL_CARD.md)", file=sys.stderr)
    codes = []
    for name, spec in specs.items():
        print(f"— {name}: {DEMO_JOBS[name]}", file=sys.stderr)
        codes.append(_run_job_in_terminal(spec))
    sheet = write_demo_sheet(args.output, specs)
    if sheet is not None:
        print(f"contact sheet (source | result | outline): {sheet.resolve()}", file=sys.stderr)
    return max(codes)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from engine.errors import PolypForgeError

    if args.batch:
        if args.command is not None:
            parser.error("--batch takes no subcommand")
        try:
            return _run_batch(args)
        except PolypForgeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CANNOT_START
    if args.command is None:
        try:
            from desktop.app import run_app
        except ImportError as exc:  # a runtime-only install (make demo) has no PySide6
            print(f"The desktop app needs PySide6: pip install -e '.[desktop]' ({exc})", file=sys.stderr)
            return EXIT_CANNOT_START
        return run_app([])
    handlers = {"export": _run_export, "quantize": _run_quantize, "inpaint": _run_inpaint, "demo": _run_demo,
                **RETRIEVAL_HANDLERS, **DOCTOR_HANDLERS,
                **REPORT_HANDLERS, **CONTROLNET_HANDLERS, **TRAINING_HANDLERS, **CAPTION_HANDLERS, **EVALUATION_HANDLERS}
    try:
        return handlers[args.command](args)
    except PolypForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START


if __name__ == "__main__":
    sys.exit(main())
