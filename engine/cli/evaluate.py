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

from engine.cli.args import non_negative_float, non_negative_int, positive_int
from engine.errors import InputError
from engine.dataset.curve_inputs import named_path, parse_fractions, parse_test_folders

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


def _ratios(text: str) -> tuple[float, ...]:
    return tuple(non_negative_float(part) for part in text.split(",") if part.strip())


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = parse_fractions(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give shares in (0, 1], comma-separated")
    return values


def _synthetic_folder(text: str) -> tuple[float | None, Path]:
    """FRACTION=DIR (a learning-curve arm's folder), or DIR alone (the single comparison)."""
    head, sep, path = text.partition("=")
    if sep:
        try:
            return _fraction(head), Path(path)
        except argparse.ArgumentTypeError:
            pass
    return None, Path(text)


def _arm(text: str) -> tuple[str, Path | None]:
    """NAME=JOB.toml, JOB.toml alone (named by its stem), or a preset's NAME alone (engine.jobs.arm_presets: its job
    file is written into --out/jobs/); None in place of the job file marks a preset."""
    stripped = text.strip()
    if stripped and "=" not in stripped and not Path(stripped).suffix and not Path(stripped).exists():
        return stripped, None
    return named_path(stripped)


def _mix(text: str) -> tuple[str, tuple[str, ...] | None]:
    """NAME=ARM+ARM[+…]: a mixed arm drawing equally from the named arms' pools; or a mix preset's NAME alone
    (engine.jobs.arm_presets.MIX_PRESETS), None in place of its arms."""
    name, sep, parts = text.partition("=")
    if not sep and name.strip():
        return name.strip(), None
    arms = tuple(part.strip() for part in parts.split("+"))
    if not name.strip() or not all(arms):
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=ARM+ARM, e.g. mixed=copy-paste+synthetic-judged, or "
                                         "a preset's name")
    return name.strip(), arms


def _arm_ratio(text: str) -> tuple[str, float]:
    """NAME=R: the arm's own synthetic variants per real frame."""
    name, sep, value = text.partition("=")
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if not sep or not name.strip() or not ratio >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=R with R a number ≥ 0, e.g. copy-paste-x2=2")
    return name.strip(), ratio


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
        help="does synthetic data help? a learning curve of a segmenter on subsets of the real frames, per arm",
        description="A learning curve: at each --real-fractions share of the real training frames (a fixed, "
        "hash-chosen, nested subset) train the downstream segmenter (the judge's compact U-Net, early stopping on "
        "real validation frames held out of the subset) on the subset alone ('real') and with each arm's synthetic "
        "variants (--arm NAME=job.toml: a batch job run on that subset's frames only; or --synthetic FRACTION=DIR), "
        "under the same budget and seeds; score every run on every --test set and on polyp-free --normals frames; "
        "report each arm's paired difference from real with 95 % confidence intervals and p-values, a verdict "
        "per fraction and test set, and the curve (report.html). Prints the plan and its estimated time first; "
        "results are kept per run, so arms, fractions and seeds can be added later and a killed evaluation "
        "resumes at the run it was in. --synthetic DIR (no FRACTION=) runs the single comparison on all training "
        "frames instead (fixed --steps). Needs torch and pycocotools (the export extra).",
    )
    evaluate.add_argument("--train", required=True, type=Path, help="real training frames + masks (any layout)")
    evaluate.add_argument("--test", required=True, action="append",
                          help="real test frames + masks, never trained on: NAME=DIR or DIR (named by its folder); "
                               "repeatable")
    evaluate.add_argument("--out", required=True, type=Path, help="folder for runs, results and the report")
    evaluate.add_argument("--arm", action="append", type=_arm, default=[],
                          help="NAME=JOB.toml: an arm whose synthetic data the batch job makes from each fraction's "
                               "subset (input, output and split file are set by evaluate); or a preset's NAME: "
                               "synthetic (the default model at random masks), synthetic-judged (only variants the "
                               "judge finds), copy-paste (the subset's polyps pasted elsewhere, no model), transplant "
                               "(moved and redrawn by the model), removal (the subset's polyps removed); repeatable. "
                               "Without --arm, --generate or --synthetic: the preset synthetic")
    evaluate.add_argument("--generate", action="append", type=Path, default=[],
                          help="JOB.toml: an arm named by the job file's name (the same as --arm NAME=JOB.toml)")
    evaluate.add_argument("--synthetic", action="append", type=_synthetic_folder, default=[],
                          help="FRACTION=DIR: the 'synthetic' arm's variants at that fraction, made from its subset "
                               "only (repeatable); a plain DIR runs the single comparison on all frames instead")
    evaluate.add_argument("--real-fractions", type=_fractions, default=None,
                          help="shares of the real training frames, comma-separated (default 0.1,0.25)")
    evaluate.add_argument("--seeds", type=positive_int, default=None,
                          help="seeds per arm and fraction (default 5 at fractions up to 0.25, 3 above; 3 for the "
                               "single comparison)")
    evaluate.add_argument("--subset-draw", type=non_negative_int, default=None, metavar="K",
                          help="which real subset of each fraction: 0 (default) the fixed hash-chosen one; K > 0 an "
                               "independent subset of the same size (give each draw its own --out): seeds vary the "
                               "training of one subset, draws vary the subset, as curators' frames do")
    evaluate.add_argument("--subset-draws", type=positive_int, default=None, metavar="N",
                          help="run the curve on N subset draws (1 … N, each in OUT/draw-K with its own report) and "
                               "compare the arms over them: OUT/draws.html, draws.md, draws.json (each arm against "
                               "real and against copy-paste, paired by draw; per polyp size); one seed per draw "
                               "unless --seeds")
    evaluate.add_argument("--synthetic-ratio", type=non_negative_float, default=1.0,
                          help="synthetic variants per real training frame in an arm's pool (default 1)")
    evaluate.add_argument("--ratio-ablation", type=_ratios, default=(),
                          help="other ratios to try at the smallest fraction, e.g. 0.5,1,2 (default: none)")
    evaluate.add_argument("--mix", action="append", type=_mix, default=[],
                          help="NAME=ARM+ARM: an arm whose variants come in equal shares from the pools of the named "
                               "arms (given by --arm), e.g. copy-paste+synthetic-judged: does the generator add to "
                               "copy-paste? Or a preset's NAME: judged-and-copy-paste (brings the preset arms "
                               "copy-paste and synthetic-judged unless given); repeatable")
    evaluate.add_argument("--arm-ratio", action="append", type=_arm_ratio, default=[],
                          help="NAME=R: that arm's synthetic variants per real frame instead of --synthetic-ratio, "
                               "e.g. copy-paste-x2=2 (its job must plan enough variants); repeatable")
    evaluate.add_argument("--val", type=Path, default=None,
                          help="real validation frames for early stopping (default: 20 %% held out of each subset)")
    evaluate.add_argument("--normals", type=Path, default=None,
                          help="polyp-free frames: the share where the segmenter sees a polyp-sized blob")
    evaluate.add_argument("--max-steps", type=positive_int, default=None,
                          help="step cap of a run (default 1500; it stops earlier when validation Dice stops improving)")
    evaluate.add_argument("--patience", type=positive_int, default=None,
                          help="validations without a better Dice before a run stops (default 6)")
    evaluate.add_argument("--plan", action="store_true", help="print the plan and its estimated time, then stop")
    evaluate.add_argument("--report-only", action="store_true",
                          help="write the report of the runs finished in --out so far (e.g. arms run with other "
                          "--real-fractions) and stop: no batch job, no training")
    evaluate.add_argument("--steps", type=positive_int, default=600,
                          help="the single comparison (--synthetic DIR): steps per run (default 600)")
    evaluate.add_argument("--synthetic-cap", type=_fraction, default=None,
                          help="the single comparison: at most this share of the training pool is synthetic")
    evaluate.add_argument("--trainer", choices=("judge", "ultralytics"), default="judge",
                          help="downstream model: judge (the compact segmenter, default) or ultralytics (YOLO "
                               "yolo11n-seg from scratch, in its own environment: make ultralytics-env)")
    evaluate.add_argument("--ultralytics-epochs", type=positive_int, default=None,
                          help="--trainer ultralytics: epochs per run (default: the same samples as the step budget "
                               "× --batch-size)")
    evaluate.add_argument("--ultralytics-python", default=None,
                          help="--trainer ultralytics: the Python of the Ultralytics environment (default: "
                               "$POLYPFORGE_ULTRALYTICS_PYTHON, this Python if it has ultralytics, .venv-ultralytics)")
    evaluate.add_argument("--size", type=positive_int, default=128, help="network input side (default 128)")
    evaluate.add_argument("--batch-size", type=positive_int, default=8, help="frames per step (default 8)")
    evaluate.add_argument("--widths", type=_widths, default=None,
                          help="channels per U-Net level, the last the bottleneck (default 16,32,64,128,256)")
    evaluate.add_argument("--validate-every", type=positive_int, default=100,
                          help="steps between validations on the real validation frames (default 100)")
    evaluate.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: all cores)")
    evaluate.add_argument("--fresh", action="store_true", help="discard what an earlier evaluation left in --out")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
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
    from engine.training.task import TrainingInterrupted

    single = any(fraction is None for fraction, _ in args.synthetic)
    try:
        return _single_comparison(args) if single else _learning_curve(args)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _single_comparison(args: argparse.Namespace) -> int:
    """``--synthetic DIR``: real vs real + that folder on all training frames, a fixed step budget."""
    from engine.evaluation.evaluate import EvaluationSettings, run_evaluation

    if (len(args.synthetic) > 1 or len(args.test) > 1 or args.arm or args.generate or args.real_fractions
            or args.mix or args.arm_ratio or args.subset_draw or args.subset_draws):
        raise InputError("--synthetic DIR (without FRACTION=) is the single comparison on all training frames: one "
                         "--synthetic, one --test, no --arm/--generate/--mix/--arm-ratio/--real-fractions/"
                         "--subset-draw(s)")
    (test,) = parse_test_folders(args.test, must_exist=False).values()
    settings = EvaluationSettings(train=args.train, synthetic=args.synthetic[0][1], test=test, out=args.out,
                                  seeds=args.seeds or 3, synthetic_cap=args.synthetic_cap, steps=args.steps,
                                  size=args.size, batch_size=args.batch_size, validate_every=args.validate_every,
                                  threads=args.threads, fresh=args.fresh, trainer=args.trainer,
                                  ultralytics_epochs=args.ultralytics_epochs, ultralytics_python=args.ultralytics_python,
                                  progress=not args.quiet, **({"widths": args.widths} if args.widths else {}))
    data = run_evaluation(settings, log=_log)
    for arm in data["arms"]:
        row = data["summary"][arm]
        cells = "  ".join(f"{m} {row[m]['mean']:.4f} ± {row[m]['std']:.4f}" if row[m]["mean"] is not None
                          else f"{m} –" for m in ("dice", "iou", "ap50", "ap"))
        print(f"{arm:15s} {cells}")
    if data["difference"]:
        print(data["difference"]["statement"])
    print(f"wrote {data['html']} and {data['json']}")
    return EXIT_OK


def curve_settings(args: argparse.Namespace):
    """The learning curve's settings from the command's flags (engine.evaluation.curve_plan.CurveSettings)."""
    from engine.evaluation.curve_plan import CurveSettings

    from engine.jobs.arm_presets import DEFAULT_ARM, PRESETS, arm_job_values, mix_parts, write_arm_job

    arms: dict[str, Path | None] = {}
    for name, job in args.arm:
        if name in arms:
            raise InputError(f"--arm {name}: given twice")
        arms[name] = job
    for job in args.generate:
        if job.stem in arms:
            raise InputError(f"--generate {job}: an arm named {job.stem!r} is already given")
        arms[job.stem] = job
    mixes: dict[str, tuple[str, ...]] = {}
    for name, parts in args.mix:
        if name in mixes:
            raise InputError(f"--mix {name}: given twice")
        mixes[name] = parts if parts is not None else mix_parts(name)
        for part in () if parts is not None else mixes[name]:
            arms.setdefault(part, None)  # a mix preset brings the preset arms it draws on, unless given
    if not arms and not args.synthetic:
        arms[DEFAULT_ARM] = None
        _log(f"no --arm given: the preset arm {DEFAULT_ARM!r} ({PRESETS[DEFAULT_ARM]} of the default job: the "
             "default model adds one polyp per frame at a random mask)")
    for name in [name for name, job in arms.items() if job is None]:
        values = arm_job_values(name)
        arms[name] = write_arm_job(name, values, Path(args.out) / "jobs", args.train,
                                   f"The preset arm {name!r} of `main.py evaluate`: {PRESETS[name]}.\nWritten by "
                                   "evaluate; input, output and the split are set by the evaluation for each fraction.")
    arm_ratios: dict[str, float] = {}
    for name, ratio in args.arm_ratio:
        if name in arm_ratios:
            raise InputError(f"--arm-ratio {name}: given twice")
        arm_ratios[name] = ratio
    tests = parse_test_folders(args.test, must_exist=False)
    optional = {"seeds": args.seeds, "fractions": args.real_fractions, "subset_draw": args.subset_draw,
                "subset_draws": args.subset_draws, "max_steps": args.max_steps,
                "patience": args.patience, "widths": args.widths}
    return CurveSettings(train=args.train, tests=tests, out=args.out, arms=arms, mixes=mixes, arm_ratios=arm_ratios,
                         synthetic={fraction: folder for fraction, folder in args.synthetic},
                         synthetic_ratio=args.synthetic_ratio, ratio_ablation=args.ratio_ablation, val=args.val,
                         normals=args.normals, validate_every=args.validate_every, size=args.size,
                         batch_size=args.batch_size, threads=args.threads, fresh=args.fresh, trainer=args.trainer,
                         ultralytics_epochs=args.ultralytics_epochs, ultralytics_python=args.ultralytics_python,
                         **{k: v for k, v in optional.items() if v is not None})


def _learning_curve(args: argparse.Namespace) -> int:
    from engine.evaluation.subset_draws import run_curve

    settings = curve_settings(args)
    bar = None if args.quiet else CurveBar()
    try:
        data = run_curve(settings, on_progress=bar.update if bar else None, log=bar.write if bar else _log,
                         plan_only=args.plan, report_only=args.report_only)
    finally:
        if bar is not None:
            bar.close()
    if args.plan:
        return EXIT_OK
    for verdict in data["verdicts"]:
        print(verdict["text"])
    print(f"wrote {data['html']} and {data['json']}")
    return EXIT_OK


class CurveBar:
    """The learning curve in a terminal: one tqdm bar over the training steps of every run left (the caps; it
    shrinks as runs stop early), the run it is in and the ETA; log lines printed above it."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, event) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.steps_total, unit="step", file=self.stream, dynamic_ncols=True, smoothing=0.05,
                            mininterval=1.0)
        if self.bar.total != event.steps_total:
            self.bar.total = event.steps_total
        self.bar.update(event.steps_done - self.bar.n)
        detail = event.message if event.phase != "train" else ""
        self.bar.set_postfix_str(f"{event.run or ''} {detail}"[-60:], refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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
