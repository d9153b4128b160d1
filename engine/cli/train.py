"""``main.py train``: the command-line face of the one trainer (engine.training.loop).

    main.py train --preset compact --input KVASIR [--normals NORMALS] --run RUN_DIR [--to BUNDLE]
    main.py train --from SD_INPAINT_DIR --input FRAMES --run RUN_DIR [--to BUNDLE]     (Polyp-Gen fine-tuning)
    main.py train --method ccis --from SD15_DIR --input FRAMES --captions CSV --run RUN_DIR [--to BUNDLE]  (CCIS-Diff)
    main.py train --method ccis --preset compact --init-from COMPACT_MODEL_DIR --input FRAMES --captions CSV
                  --run RUN_DIR [--to BUNDLE]                           (CCIS-Diff's ControlNet on the compact base)
    main.py train --method detail --preset compact --init-from COMPACT_MODEL_DIR --input KVASIR --run RUN_DIR
                  [--to BUNDLE]                    (the compact model's detail stage: its region at 2× the base's size)
    accelerate launch main.py train ...                                              (several GPUs)

Only argparse is imported at module level: ``main.py --help`` stays instant and the built app (no torch) can list
the command and say what it needs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import InputError

PRESETS = ("compact",)
METHODS = ("inpaint", "ccis", "detail")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip() != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    return values


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1 (e.g. 0.15), got {text}")
    return value


def _fraction_pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two fractions LOW,HIGH (e.g. 0.12,0.70), got {text!r}") from None
    if not 0.0 < low < high < 1.0:
        raise argparse.ArgumentTypeError(f"expected 0 < LOW < HIGH < 1, got {text!r}")
    return low, high


def register_commands(subparsers) -> dict:
    train = subparsers.add_parser(
        "train",
        help="train a model: the compact polyp model from scratch (--preset compact) or fine-tune SD-inpainting (--from)",
        description="Polyp-Gen's spatial-aware training (BPM masks for Polyp, free masks for Normal, MSE + λ·lesion-"
                    "guided MSE) with checkpoints every N steps, exact --resume after a kill, a sample grid on held-out "
                    "frames, a JSONL log and a loss plot. Ends with a model folder, an exported bundle and a model card.",
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", choices=PRESETS, help="train the compact pixel-space model from scratch (with "
                        "--method ccis: a compact CCIS ControlNet on the --init-from compact model)")
    source.add_argument("--from", dest="source", type=Path,
                        help="a local diffusers folder: a StableDiffusionInpaintPipeline to fine-tune, or with --method "
                             "ccis the SD-1.5 text-to-image base of the ControlNet")
    train.add_argument("--method", choices=METHODS, default="inpaint",
                       help="inpaint: the inpainting model (--preset compact or --from SD-inpainting; default); ccis: "
                            "CCIS-Diff's ControlNet on mask + clinical caption, on the --from base or, with --preset compact, "
                            "on the --init-from compact model (frozen); detail (with --preset compact): the detail stage "
                            "of the --init-from compact model, trained from scratch on real crops at twice its resolution, "
                            "its bundle the base's with the detail part")
    ccis = train.add_argument_group("--method ccis (CCIS-Diff's ControlNet)")
    ccis.add_argument("--captions", type=Path, default=None,
                      help="captions file for the training frames (CSV/TSV/JSONL, as `main.py caption` writes it)")
    ccis.add_argument("--text-dropout", type=float, default=0.5,
                      help="share of samples trained with the empty caption, for classifier-free guidance (0.5)")
    ccis.add_argument("--no-blur-weighting", action="store_true", help="ablation: no blur-mask weighting branch")
    ccis.add_argument("--no-text-attention", action="store_true", help="ablation: no text-aware attention")
    ccis.add_argument("--blur-sigma", type=float, default=None,
                      help="σ of the blurred mask in pixels (default 8 at 512², scaled with --resolution; --preset "
                           "compact: resolution / 32)")
    ccis.add_argument("--controlnet-from", type=Path, default=None,
                      help="continue this ControlNet folder instead of copying the base U-Net's encoder")
    ccis.add_argument("--sample-steps", type=int, default=20,
                      help="DDIM steps of the sample grid (20; CFG 7.0, --preset compact: 3.0)")
    ccis.add_argument("--allow-uncaptioned", action="store_true",
                      help="train frames the captions file lacks with the empty caption instead of refusing")
    train.add_argument("--input", type=Path, action="append", required=True,
                       help="frames with polyp masks or labels (any layout the batch job reads); repeatable")
    train.add_argument("--normals", type=Path, action="append", default=[], help="folder of polyp-free frames; repeatable")
    train.add_argument("--run", type=Path, required=True, help="run folder: checkpoints, log, samples, final model")
    train.add_argument("--to", dest="bundle", type=Path, default=None, help="export the trained model to this bundle at the end")
    train.add_argument("--name", default=None, help="bundle name (default: the bundle folder's name)")
    resume = train.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=True,
                        help="continue from the run folder's newest checkpoint (default)")
    resume.add_argument("--fresh", dest="resume", action="store_false", help="start over, discarding the run's checkpoints")
    train.add_argument("--steps", type=int, default=None, help="optimiser steps in all (a resumed run may raise it)")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--grad-accum", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--warmup-steps", type=int, default=None)
    train.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None)
    train.add_argument("--ema-decay", type=float, default=None, help="0 turns the EMA off")
    train.add_argument("--resolution", type=int, default=None, help="training crop side (compact) / frame side (--from)")
    train.add_argument("--mask-mode", choices=("bpm", "pixel", "box"), default=None,
                       help="Polyp masks: boundary-enhanced pseudo mask (default; --method ccis --preset compact: "
                            "pixel), the polyp's own mask, or its box")
    train.add_argument("--polyp-fraction", type=float, default=0.7, help="share of Polyp pairs (rest: Normal)")
    train.add_argument("--lg-weight", type=float, default=0.5, help="λ of the lesion-guided loss (0: ablation)")
    train.add_argument("--outside-weight", type=float, default=None, help="loss weight outside the mask (compact: 0.1)")
    train.add_argument("--min-snr-gamma", type=float, default=None, help="min-SNR-γ weighting (compact: 5; 0 = off)")
    train.add_argument("--widths", type=_int_tuple, default=None, help="compact U-Net widths per level, e.g. 48,96,192")
    train.add_argument("--blocks", type=int, default=None, help="compact U-Net res blocks per level")
    train.add_argument("--stem", type=int, default=None, help="compact U-Net space-to-depth stem (1 or 2)")
    train.add_argument("--attention-levels", type=_int_tuple, default=None, help="compact U-Net levels with attention")
    train.add_argument("--init-from", type=Path, default=None,
                       help="start from these weights: a model folder, or a run folder's newest checkpoint (e.g. a "
                            "lower-resolution run); with --method ccis --preset compact: the compact base model "
                            "folder (frozen), e.g. training_runs/compact-anneal/model; with --method detail: the compact "
                            "base the detail stage belongs to")
    train.add_argument("--attributes", action="store_true", default=False,
                       help="--preset compact: also condition the model on the clinical attributes the captioner "
                            "measures on each training polyp (colour, surface, size, outline, elevation), as learned "
                            "embeddings beside the Polyp/Normal label; the batch job then asks them per variant "
                            "(--attributes there). Measured once per frame, cached in the run folder. Off by default")
    train.add_argument("--rare-attributes", type=_share, default=None, metavar="FLOOR",
                       help="with --attributes: draw polyps whose colour, surface or elevation is rare (whitish, "
                            "irregular, flat) more often, so that each value makes up at least about FLOOR of the "
                            "Polyp pairs (a polyp at most 8 times as often as in proportion), e.g. 0.15; the run's "
                            "log says the shares before and after. Default: in proportion")
    train.add_argument("--attribute-lr-scale", type=_positive_float, default=None, metavar="FACTOR",
                       help="with --attributes: train the attribute embeddings at FACTOR times the learning rate, "
                            "without weight decay (they start at zero beside a label embedding of norm ~10 and at the "
                            "plain rate stay too small to move the model), e.g. 100 (make train-rare128). Default: 1")
    train.add_argument("--normal-sizes", type=_fraction_pair, default=None, metavar="LOW,HIGH",
                       help="--preset compact: the side of a Normal (removal) training region as a fraction of the "
                            "frame's shorter side (default 0.12,0.40); e.g. 0.12,0.70 to teach large removals")
    train.add_argument("--normal-max-dark", type=float, default=None, metavar="SHARE",
                       help="--preset compact: Normal regions hold at most this share of lumen (dark) pixels "
                            "(default: any), so removals learn to fill with mucosa, not a new lumen")
    train.add_argument("--schedule-shift", type=_positive_float, default=None, metavar="FACTOR",
                       help="--preset compact: shift the cosine noise schedule for a resolution FACTOR times the one "
                            "it was made for (simple diffusion: log-SNR - 2 ln FACTOR), e.g. 2 for a 128² run "
                            "warm-started from a 64² model (default 1: unshifted)")
    train.add_argument("--cell-shortcut", action="store_true", default=False,
                       help="--preset compact with --stem 2: pass the noisy image's detail inside each stem cell to the "
                            "output with a per-timestep gain (the v-prediction of that detail under a Gaussian prior "
                            "measured on the training crops), so the trunk, which sees cells, adds only the rest: how a "
                            "64² model lifted to a stem of 2 starts without the stem's per-pixel noise")
    train.add_argument("--box-mask-fraction", type=float, default=None,
                       help="share of pairs trained with the region's box as mask (compact: 0.25)")
    train.add_argument("--held-out-fraction", type=float, default=0.05, help="frames never trained on (by name hash)")
    train.add_argument("--max-side", type=int, default=640, help="frames are scaled to this longer side in memory")
    train.add_argument("--limit-frames", type=int, default=None, help="use only the first N frames of each folder")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=None)
    train.add_argument("--sample-every", type=int, default=None)
    train.add_argument("--validate-every", type=int, default=None)
    train.add_argument("--log-every", type=int, default=None)
    train.add_argument("--keep-checkpoints", type=int, default=3, help="newest checkpoints kept in the run folder")
    train.add_argument("--threads", type=int, default=None)
    train.add_argument("--loader-workers", type=int, default=None, metavar="N",
                       help="build the coming batches in N worker processes (a GPU run: the data would otherwise "
                            "hold the GPU up; the batches are the same as without)")
    train.add_argument("--max-minutes", type=float, default=None,
                       help="stop (checkpointed, then exported) after this many minutes; --resume continues later")
    train.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None,
                       help="default: fp16 when fine-tuning (--from) on a GPU, else no")
    train.add_argument("--no-export", action="store_true", help="stop after the last checkpoint (no model folder, no bundle)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    return {"train": run_train}


def run_train(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("error: training needs torch: pip install torch==2.13.0 && pip install -e '.[export]'", file=sys.stderr)
        return 2
    from engine.training.runs import run_training
    from engine.training.task import TrainingError, TrainingInterrupted

    try:
        return run_training(args)
    except TrainingInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
