"""One ``main.py train`` run from start to finish: data → task → the trainer → model folder → bundle → model card.

Defaults per way in:
- ``--preset compact``: the compact pixel-space model (engine.training.compact_task), AdamW 1e-3 after 100 warmup
  steps, batch 16 crops of 128², EMA 0.999, checkpoint every 200 steps, samples every 500.
- ``--from DIR``: Polyp-Gen's recipe on a diffusers SD-inpainting folder (engine.training.sd_task): AdamW 1e-5
  constant, batch 2 × gradient accumulation 4, 512², mixed precision when a GPU is there.
- ``--method ccis --from SD15_DIR``: CCIS-Diff's ControlNet on an SD-1.5 base (engine.training.ccis_task).
- ``--method ccis --preset compact --init-from MODEL_DIR``: a compact CCIS ControlNet on the compact base
  (engine.training.ccis_compact_task): AdamW 1e-4 constant, batch 16 crops at the base's resolution, no EMA.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from engine.errors import InputError
from engine.training.loop import TrainConfig, train

COMPACT_DEFAULTS = dict(steps=20000, lr=1e-3, warmup_steps=100, batch_size=16, grad_accum=1, ema_decay=0.999,
                        checkpoint_every=200, sample_every=500, validate_every=250, log_every=10, resolution=128)
# CCIS-Diff's settings: batch 4, lr 1e-5 (the paper); DDIM 20 steps and CFG 7.0 for the sample grid (the task).
CCIS_DEFAULTS = dict(steps=1000, lr=1e-5, warmup_steps=0, batch_size=4, grad_accum=1, ema_decay=0.0,
                     checkpoint_every=100, sample_every=250, validate_every=100, log_every=5, resolution=512)
# The compact CCIS ControlNet (--method ccis --preset compact): sized for a CPU; lr 1e-4 (the branch starts
# from the base's weights, the new modules from zero outputs); resolution: the base's training crop.
CCIS_COMPACT_DEFAULTS = dict(steps=1000, lr=1e-4, warmup_steps=0, batch_size=16, grad_accum=1, ema_decay=0.0,
                             checkpoint_every=100, sample_every=250, validate_every=100, log_every=10, resolution=64)
SD_DEFAULTS = dict(steps=1000, lr=1e-5, warmup_steps=0, batch_size=2, grad_accum=4, ema_decay=0.0,
                   checkpoint_every=100, sample_every=250, validate_every=0, log_every=5, resolution=512)


def _pick(args, name, defaults):
    value = getattr(args, name, None)
    return defaults[name] if value is None else value


def _mixed_precision(args) -> str:
    if args.mixed_precision is not None:
        return args.mixed_precision
    import torch

    return "fp16" if getattr(args, "source", None) is not None and torch.cuda.is_available() else "no"


def train_config(args, defaults: dict) -> TrainConfig:
    ema = _pick(args, "ema_decay", defaults)
    return TrainConfig(
        steps=_pick(args, "steps", defaults), lr=_pick(args, "lr", defaults),
        warmup_steps=_pick(args, "warmup_steps", defaults), lr_schedule=args.lr_schedule or "constant",
        grad_accum=_pick(args, "grad_accum", defaults), ema_decay=ema if ema else None, seed=args.seed,
        checkpoint_every=_pick(args, "checkpoint_every", defaults), sample_every=_pick(args, "sample_every", defaults),
        validate_every=_pick(args, "validate_every", defaults), log_every=_pick(args, "log_every", defaults),
        threads=args.threads, mixed_precision=_mixed_precision(args), progress=not args.quiet,
        keep_checkpoints=getattr(args, "keep_checkpoints", 3),
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
        early_stop_metric="val_loss" if _pick(args, "validate_every", defaults) else None, early_stop_mode="min",
    )


def run_training(args: argparse.Namespace) -> int:
    from engine.training.corpus import load_corpus

    for folder in list(args.input) + list(args.normals):
        if not Path(folder).is_dir():
            raise InputError(f"{folder}: training folder not found")
    started = time.perf_counter()
    corpus = load_corpus(args.input, args.normals, max_side=args.max_side, held_out_fraction=args.held_out_fraction,
                         limit=args.limit_frames)
    info = corpus.describe()
    print(f"training data: {info['train_frames']} frames ({info['train_polyps']} polyps), "
          f"{info['held_out_frames']} held out; {len(corpus.problems)} unreadable "
          f"({time.perf_counter() - started:.1f} s to load)", flush=True)
    for problem in corpus.problems[:10]:
        print(f"  left out: {problem}", flush=True)
    method = getattr(args, "method", "inpaint")
    if method == "ccis" and args.preset == "compact":
        from engine.training.ccis_compact_task import ccis_compact_run

        task, config, finish = ccis_compact_run(args, corpus, CCIS_COMPACT_DEFAULTS)
    elif method == "ccis":
        from engine.training.ccis_task import ccis_run

        if args.source is None:
            raise InputError("--method ccis trains on a base model: give --from SD15_DIR (a text-to-image folder), "
                             "or --preset compact --init-from MODEL_DIR (the compact base)")
        task, config, finish = ccis_run(args, corpus, CCIS_DEFAULTS)
    elif args.preset == "compact":
        task, config, finish = _compact(args, corpus)
    else:
        from engine.training.sd_task import sd_inpaint_run

        task, config, finish = sd_inpaint_run(args, corpus, SD_DEFAULTS)
    result = train(task, config, args.run, resume=args.resume)
    print(f"trained to step {result.step} (loss {result.last_loss:.4f}, {result.train_seconds / 3600:.2f} h of "
          f"training in all)" if result.last_loss is not None else f"at step {result.step}", flush=True)
    if args.no_export:
        return 0
    finish(result)
    return 0


def _compact(args, corpus):
    from engine.models.compact_unet import CompactConfig
    from engine.training.compact_task import CompactInpaintTask, CompactTaskConfig

    defaults = CompactTaskConfig()
    model = defaults.model
    model = CompactConfig(
        widths=args.widths or model.widths, blocks=args.blocks if args.blocks is not None else model.blocks,
        stem=args.stem if args.stem is not None else model.stem,
        attention_levels=args.attention_levels if args.attention_levels is not None else model.attention_levels,
    )
    gamma = defaults.min_snr_gamma if args.min_snr_gamma is None else (args.min_snr_gamma or None)
    task_config = CompactTaskConfig(
        resolution=_pick(args, "resolution", COMPACT_DEFAULTS), model=model,
        batch_size=_pick(args, "batch_size", COMPACT_DEFAULTS), polyp_fraction=args.polyp_fraction,
        mask_mode=args.mask_mode or "bpm", lg_weight=args.lg_weight,
        outside_weight=defaults.outside_weight if args.outside_weight is None else args.outside_weight,
        min_snr_gamma=gamma,
        box_mask_fraction=defaults.box_mask_fraction if args.box_mask_fraction is None else args.box_mask_fraction,
        init_from=str(Path(args.init_from).resolve()) if args.init_from else None,
    )
    task = CompactInpaintTask(corpus, task_config)
    config = train_config(args, COMPACT_DEFAULTS)

    def finish(result):
        from engine.export.compact_export import export_compact_bundle
        from engine.models.compact_unet import save_compact_model
        from engine.training.model_card import write_model_card

        model_dir = save_compact_model(result.final_model(), task_config, Path(args.run) / "model")
        card = write_model_card(Path(args.run), model_dir, task, config, result, corpus)
        print(f"model folder: {model_dir}\nmodel card: {card}", flush=True)
        if args.bundle is not None:
            bundle = export_compact_bundle(model_dir, args.bundle, name=args.name, card=card)
            print(f"bundle: {bundle}", flush=True)

    return task, config, finish
