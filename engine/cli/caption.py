"""Command-line wiring of ``main.py caption --input FRAMES [--masks DIR] --out captions.csv [--model VLM_DIR]``.

``register_commands(subparsers)`` adds the command and returns {"caption": handler}. Exit codes: 0 every
frame with a mask captioned; 1 written, but some frames failed (each named with its reason); 2 could not
start (one line says why). Heavy imports (and torch, only with --model) stay inside the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from engine.cli.args import positive_int

EXIT_OK, EXIT_FAILURES = 0, 1

Handler = Callable[[argparse.Namespace], int]


def register_commands(subparsers) -> dict[str, Handler]:
    caption = subparsers.add_parser(
        "caption",
        help="CCIS-Diff: clinical captions measured from frames + masks (colour, surface, size, outline, …)",
        description="Describe each polyp of each frame from its pixels and mask, deterministically: colour against "
        "the mucosa (pale/pink/red/whitish), surface (smooth/lobulated/irregular), size in the view "
        "(diminutive/small/large), outline (round/oval/irregular), flat or raised where shading tells, position, "
        "background (clean mucosa, yellowish debris, bubbles, blood, dark lumen) and lighting. Writes a captions "
        "file (CSV/TSV/JSONL) the batch job's --captions reads unchanged, with the attributes as JSON.",
    )
    caption.add_argument("--input", required=True, type=Path,
                         help="folder of frames (Kvasir-SEG images/ + masks/ found by itself)")
    caption.add_argument("--masks", type=Path, default=None, help="masks folder, paired with frames by file name")
    caption.add_argument("--out", required=True, type=Path, help="captions file to write (.csv, .tsv or .jsonl)")
    caption.add_argument("--model", type=Path, default=None,
                         help="a local transformers vision-language captioning model folder (BLIP, GIT, …): its "
                         "text goes in the vlm_text column, beside the measured one. Nothing is downloaded")
    caption.add_argument("--model-prompt", default=None,
                         help="text given to the --model with each polyp's crop (e.g. a caption prefix)")
    caption.add_argument("--threads", type=positive_int, default=None, help="torch threads for --model")
    caption.add_argument("--quiet", action="store_true", help="no progress bar")
    caption.add_argument("--json-summary", type=Path, default=None, help="write the summary as JSON here too")
    return {"caption": run_caption_command}


def format_distribution(distribution: dict[str, dict[str, int]], total: int) -> list[str]:
    lines = []
    for attribute, counts in distribution.items():
        cells = ", ".join(f"{value} {count} ({count / max(1, total):.0%})" for value, count in counts.items())
        lines.append(f"  {attribute:<19} {cells}")
    return lines


def run_caption_command(args: argparse.Namespace) -> int:
    from engine.captioning.batch import CaptionCannotStart, caption_folder
    from engine.errors import InputError

    describer = None
    if args.model is not None:
        from engine.captioning.vlm import VisionLanguageDescriber

        try:
            describer = VisionLanguageDescriber.open(args.model, prompt=args.model_prompt, threads=args.threads)
        except InputError as exc:
            raise CaptionCannotStart(str(exc)) from None
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=0, desc="caption", unit="frame", file=sys.stderr, dynamic_ncols=True)

    def on_frame(number: int, total: int, rel: str) -> None:
        if bar is not None:
            bar.total = total
            bar.n = number - 1
            bar.set_postfix_str(rel[-40:], refresh=True)

    try:
        summary = caption_folder(args.input, args.out, masks_dir=args.masks, describer=describer, on_frame=on_frame)
    finally:
        if bar is not None:
            bar.n = bar.total
            bar.close()
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    for failure in summary.failures:
        print(f"failed: {failure['reason']}", file=sys.stderr)
    print(f"{summary.output}: {summary.captioned} of {summary.frames} frames captioned ({summary.polyps} polyps), "
          f"{len(summary.without_mask)} without a polyp mask, {len(summary.failures)} failed"
          + (f", {summary.reused} reused from an interrupted run" if summary.reused else "")
          + (f", {summary.curator_kept} curator-edited texts kept" if summary.curator_kept else "")
          + f" in {summary.seconds:.1f} s")
    if summary.captioned:
        print("distribution over frames:")
        print("\n".join(format_distribution(summary.distribution, summary.captioned)))
    if args.json_summary is not None:
        from engine.fileio import atomic_write_bytes

        atomic_write_bytes(args.json_summary, (json.dumps(summary.to_json(), indent=1, ensure_ascii=False) + "\n").encode())
    return EXIT_FAILURES if summary.failures else EXIT_OK
