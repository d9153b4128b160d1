"""Command-line wiring of the judge: ``train-judge`` and ``evaluate``.

``register_commands(subparsers)`` adds both and returns {command name: handler}; a handler returns an exit code
(0 done, 130 interrupted with a checkpoint written) and raises engine.errors.PolypForgeError subclasses for
one-line errors (exit 2). Only argparse is imported here (torch inside the handlers): ``main.py --help`` stays
instant, and this module is on the app's import path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from engine.cli.args import positive_int

EXIT_OK, EXIT_CANNOT_START, EXIT_INTERRUPTED = 0, 2, 130
Handler = Callable[[argparse.Namespace], int]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be between 0 and 1")
    return value


def _widths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if len(values) < 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least two positive widths (levels + bottleneck)")
    return values


def _log(text: str) -> None:
    print(text, file=sys.stderr)


def register_commands(subparsers) -> dict[str, Handler]:
    judge = subparsers.add_parser(
        "train-judge",
        help="train the polyp judge (a compact segmenter) on frames + masks and export a segmenter bundle",
        description="Train a compact polyp segmentation network from scratch on real frames and masks (any layout "
        "the batch job reads), with augmentation, a held-out split (--val, the input's val/ folder, or ~10 %% by a "
        "hash of the file name) and early stopping on validation Dice, through the shared trainer (checkpoints, "
        "exact --resume after a kill, progress with ETA, log.jsonl, loss.png, samples/). Exports the best weights "
        "to a \"segmenter\" bundle (ONNX, parity-checked against torch). Needs torch (the export extra). An "
        "evaluation tool, not a diagnostic device.",
    )
    judge.add_argument("--input", required=True, type=Path, help="frames + masks (Kvasir-SEG layout, --masks style, …)")
    judge.add_argument("--val", type=Path, default=None, help="validation frames + masks (default: held out of --input)")
    judge.add_argument("--to", required=True, type=Path, help="segmenter bundle folder to write")
    judge.add_argument("--steps", type=positive_int, default=4000, help="optimiser steps (default 4000)")
    judge.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    judge.add_argument("--run-dir", type=Path, default=None,
                       help="checkpoints, log and samples (default runs/<bundle name>)")
    judge.add_argument("--size", type=positive_int, default=128, help="network input side, a multiple of 16 (default 128)")
    judge.add_argument("--batch-size", type=positive_int, default=8, help="frames per step (default 8)")
    judge.add_argument("--widths", type=_widths, default=None,
                       help="channels per U-Net level, the last the bottleneck (default 16,32,64,128,256)")
    judge.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine schedule; default 2e-3)")
    judge.add_argument("--validate-every", type=positive_int, default=200, help="steps between validations (default 200)")
    judge.add_argument("--patience", type=positive_int, default=8,
                       help="stop after this many validations without a better val Dice (default 8)")
    judge.add_argument("--checkpoint-every", type=positive_int, default=100, help="steps between checkpoints (default 100)")
    judge.add_argument("--max-minutes", type=float, default=None,
                       help="train for at most this many minutes (this invocation), then checkpoint and export the best weights "
                       "so far")
    judge.add_argument("--seed", type=int, default=0)
    judge.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: all cores)")
    judge.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    judge.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    judge.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate = subparsers.add_parser(
        "evaluate",
        help="does the synthetic set help? train a segmenter on real vs real + synthetic, test on unseen real frames",
        description="Train the downstream segmenter (the judge's compact U-Net) under the same budget and seeds on "
        "the real training frames alone and on them plus the synthetic set (a batch job's output: its images and "
        "labels), and score each on a real test set at its own resolution: Dice and IoU per frame, AP50 and "
        "AP@[.5:.95] from the masks' boxes (pycocotools), mean ± std over seeds, the paired difference with a "
        "significance statement, learning curves. Refuses (one line) when a training frame or a synthetic "
        "variant's source is a test frame (sha256). Writes report.html and report.json into --out; a killed "
        "evaluation resumes at the run it was in. Needs torch (the export extra).",
    )
    evaluate.add_argument("--train", required=True, type=Path, help="real training frames + masks (any layout)")
    evaluate.add_argument("--synthetic", required=True, type=Path, help="a batch job's output folder")
    evaluate.add_argument("--test", required=True, type=Path, help="real test frames + masks, never trained on")
    evaluate.add_argument("--out", required=True, type=Path, help="folder for runs, results and the report")
    evaluate.add_argument("--seeds", type=positive_int, default=3, help="seeds per arm (default 3)")
    evaluate.add_argument("--synthetic-cap", type=_fraction, default=None,
                          help="at most this share of the training pool is synthetic (default: all variants)")
    evaluate.add_argument("--trainer", choices=("judge", "ultralytics"), default="judge",
                          help="downstream model: judge (the compact segmenter, default) or ultralytics (YOLO "
                               "yolo11n-seg from scratch, in its own environment: make ultralytics-env)")
    evaluate.add_argument("--ultralytics-epochs", type=positive_int, default=None,
                          help="--trainer ultralytics: epochs per run (default: the same samples as --steps × "
                               "--batch-size)")
    evaluate.add_argument("--ultralytics-python", default=None,
                          help="--trainer ultralytics: the Python of the Ultralytics environment (default: "
                               "$POLYPFORGE_ULTRALYTICS_PYTHON, this Python if it has ultralytics, .venv-ultralytics)")
    evaluate.add_argument("--steps", type=positive_int, default=600, help="steps per run (default 600)")
    evaluate.add_argument("--size", type=positive_int, default=128, help="network input side (default 128)")
    evaluate.add_argument("--batch-size", type=positive_int, default=8, help="frames per step (default 8)")
    evaluate.add_argument("--widths", type=_widths, default=None,
                          help="channels per U-Net level, the last the bottleneck (default 16,32,64,128,256)")
    evaluate.add_argument("--validate-every", type=positive_int, default=100,
                          help="steps between validations on held-out real training frames (default 100)")
    evaluate.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: all cores)")
    evaluate.add_argument("--fresh", action="store_true", help="discard the runs an earlier evaluation left in --out")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    return {"train-judge": run_train_judge_command, "evaluate": run_evaluate_command}


def missing_evaluation_packages() -> list[str]:
    """The packages `evaluate` needs that this environment lacks (checked before anything is trained: pycocotools
    is first needed only after the first run's training, minutes in)."""
    import importlib.util

    return [name for name in ("torch", "pycocotools") if importlib.util.find_spec(name) is None]


def run_evaluate_command(args: argparse.Namespace) -> int:
    missing = missing_evaluation_packages()
    if missing:
        print(f"error: evaluate needs {' and '.join(missing)}: pip install torch==2.13.0 && pip install -e '.[export]'",
              file=sys.stderr)
        return EXIT_CANNOT_START
    from engine.evaluation.evaluate import EvaluationSettings, run_evaluation
    from engine.training.task import TrainingInterrupted

    settings = EvaluationSettings(train=args.train, synthetic=args.synthetic, test=args.test, out=args.out,
                                  seeds=args.seeds, synthetic_cap=args.synthetic_cap, steps=args.steps,
                                  size=args.size, batch_size=args.batch_size, validate_every=args.validate_every,
                                  threads=args.threads, fresh=args.fresh, trainer=args.trainer,
                                  ultralytics_epochs=args.ultralytics_epochs, ultralytics_python=args.ultralytics_python,
                                  progress=not args.quiet, **({"widths": args.widths} if args.widths else {}))
    try:
        data = run_evaluation(settings, log=_log)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    for arm in data["arms"]:
        row = data["summary"][arm]
        cells = "  ".join(f"{m} {row[m]['mean']:.4f} ± {row[m]['std']:.4f}" if row[m]["mean"] is not None
                          else f"{m} –" for m in ("dice", "iou", "ap50", "ap"))
        print(f"{arm:15s} {cells}")
    if data["difference"]:
        print(data["difference"]["statement"])
    print(f"wrote {data['html']} and {data['json']}")
    return EXIT_OK


def run_train_judge_command(args: argparse.Namespace) -> int:
    from engine.evaluation.train_judge import JudgeTraining, run_train_judge
    from engine.training.task import TrainingInterrupted

    settings = JudgeTraining(input=args.input, to=args.to, val=args.val, run_dir=args.run_dir, steps=args.steps,
                             size=args.size, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             validate_every=args.validate_every, patience=args.patience, threads=args.threads,
                             checkpoint_every=args.checkpoint_every, max_minutes=args.max_minutes,
                             resume=args.resume, name=args.name, overwrite=args.overwrite, progress=not args.quiet,
                             **({"widths": args.widths} if args.widths else {}))
    try:
        outcome = run_train_judge(settings, log=_log)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    validation = outcome["training"]["validation"]
    print(f"judge     {outcome['bundle']}")
    print(f"trained   {outcome['training']['steps']} steps, {outcome['training']['train_minutes']} min")
    print(f"val       Dice {validation['dice']:.4f}, IoU {validation['iou']:.4f} on "
          f"{validation['frames']} held-out frames (their own resolution)")
    return EXIT_OK
