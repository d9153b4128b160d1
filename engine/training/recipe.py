"""From a command's options to the one trainer's settings, and from a trained model to its folder, card and bundle.

The leaf every training task and every command that trains (``main.py train``, ``train-judge``, ``evaluate``)
builds on; it imports no task, so no task reaches back into the command that dispatches to it.

- ``train_config``: a ``TrainConfig`` from options (an argparse namespace or a settings dataclass) over a table
  of defaults; ``generator_config`` adds ``main.py train``'s own rules (mixed precision, early stopping on the
  validation loss). The defaults of each way into ``main.py train``:
  - ``--preset compact``: AdamW 1e-3 after 100 warmup steps, batch 16 crops of 128², EMA 0.999, checkpoint
    every 200 steps, samples every 500;
  - ``--from DIR``: Polyp-Gen's recipe on a diffusers SD-inpainting folder: AdamW 1e-5 constant, batch 2 ×
    gradient accumulation 4, 512², mixed precision when a GPU is there;
  - ``--method ccis --from SD15_DIR``: CCIS-Diff's settings (batch 4, lr 1e-5);
  - ``--method ccis --preset compact``: AdamW 1e-4 constant, batch 16 crops at the base's resolution, no EMA;
  - ``--method detail --preset compact``: the detail stage, from scratch like the compact preset (AdamW 1e-3
    after 100 warmup steps, EMA 0.999), batch 16 crops at twice the base's resolution, checkpoint every 100 steps.
- ``TaskEntry`` / ``ModelOutput`` / ``save_model``: what a task offers the dispatcher (engine.training.runs) and
  the one sequence that ends every run: model folder → model card → optional bundle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.training.model_card import write_model_card
from engine.training.task import TrainConfig, TrainingTask, TrainResult

COMPACT_DEFAULTS = dict(steps=20000, lr=1e-3, warmup_steps=100, batch_size=16, grad_accum=1, ema_decay=0.999,
                        checkpoint_every=200, sample_every=500, validate_every=250, log_every=10, resolution=128)
# CCIS-Diff's settings: batch 4, lr 1e-5 (the paper); DDIM 20 steps and CFG 7.0 for the sample grid (the task).
CCIS_DEFAULTS = dict(steps=1000, lr=1e-5, warmup_steps=0, batch_size=4, grad_accum=1, ema_decay=0.0,
                     checkpoint_every=100, sample_every=250, validate_every=100, log_every=5, resolution=512)
# The compact CCIS ControlNet (--method ccis --preset compact): sized for a CPU; lr 1e-4 (the branch starts
# from the base's weights, the new modules from zero outputs); resolution: the base's training crop.
CCIS_COMPACT_DEFAULTS = dict(steps=1000, lr=1e-4, warmup_steps=0, batch_size=16, grad_accum=1, ema_decay=0.0,
                             checkpoint_every=100, sample_every=250, validate_every=100, log_every=10, resolution=64)
# The compact model's detail stage (--method detail --preset compact): the compact preset's recipe (it trains from
# scratch too); resolution: twice the base's (engine.training.detail_task sets it from the --init-from base).
DETAIL_DEFAULTS = dict(steps=20000, lr=1e-3, warmup_steps=100, batch_size=16, grad_accum=1, ema_decay=0.999,
                       checkpoint_every=100, sample_every=250, validate_every=250, log_every=10, resolution=128)
SD_DEFAULTS = dict(steps=1000, lr=1e-5, warmup_steps=0, batch_size=2, grad_accum=4, ema_decay=0.0,
                   checkpoint_every=100, sample_every=250, validate_every=0, log_every=5, resolution=512)

TRAIN_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def pick(options, name: str, defaults: Mapping[str, Any]):
    """The option ``name`` when it is set (not None), else its default."""
    value = getattr(options, name, None)
    return defaults[name] if value is None else value


def train_config(options, defaults: Mapping[str, Any]) -> TrainConfig:
    """The trainer's settings: each TrainConfig field is the option of that name when set, else its value in
    ``defaults``, else TrainConfig's own. ``max_minutes`` sets ``max_seconds``, ``quiet`` turns the progress bar
    off, and an EMA decay of 0 means no EMA."""
    values = {name: pick(options, name, defaults) for name in TRAIN_CONFIG_FIELDS
              if name in defaults or getattr(options, name, None) is not None}
    if getattr(options, "max_minutes", None) is not None:
        values["max_seconds"] = 60.0 * options.max_minutes
    if getattr(options, "quiet", False):
        values["progress"] = False
    if "ema_decay" in values and not values["ema_decay"]:
        values["ema_decay"] = None
    return TrainConfig(**values)


def default_mixed_precision(options) -> str:
    """fp16 when fine-tuning a ``--from`` folder on a GPU, else none."""
    import torch

    return "fp16" if getattr(options, "source", None) is not None and torch.cuda.is_available() else "no"


def generator_config(options, defaults: Mapping[str, Any]) -> TrainConfig:
    """``main.py train``'s settings over one of the tables above: mixed precision by ``default_mixed_precision``
    unless asked for, early stopping on the validation loss when the run validates."""
    rules = {"early_stop_metric": "val_loss" if pick(options, "validate_every", defaults) else None,
             "early_stop_mode": "min"}
    if getattr(options, "mixed_precision", None) is None:
        rules["mixed_precision"] = default_mixed_precision(options)
    return train_config(options, {**defaults, **rules})


@dataclass(frozen=True)
class ModelOutput:
    """Where a trained task's model goes and how it leaves the run folder."""

    folder: str  # the model folder's name inside the run folder
    label: str  # how the closing message names it ("model folder", "ControlNet folder")
    write: Callable[[Any, Path], Path]  # (final weights, folder) → the folder written
    export: Callable[[Path, Path, str | None, Path], Path]  # (model folder, bundle, name, card) → the bundle
    figures: dict | None = None  # further figures for the model card


@dataclass(frozen=True)
class TaskEntry:
    """What a task module offers ``main.py train``: its task and trainer settings from the command's options and
    the training data, and where the trained model goes."""

    build: Callable[[Any, Any], tuple[TrainingTask, TrainConfig]]  # (options, corpus) → (task, settings)
    output: Callable[[TrainingTask], ModelOutput]


def save_model(output: ModelOutput, run_dir: Path, task: TrainingTask, config: TrainConfig, result: TrainResult,
               corpus, bundle: Path | None = None, name: str | None = None) -> Path:
    """Model folder → model card (in the run folder and the model folder) → the bundle when ``bundle`` is given;
    returns the model folder."""
    run_dir = Path(run_dir)
    folder = output.write(result.final_model(), run_dir / output.folder)
    card = write_model_card(run_dir, folder, task, config, result, corpus, extra_figures=output.figures)
    print(f"{output.label}: {folder}\nmodel card: {card}", flush=True)
    if bundle is not None:
        print(f"bundle: {output.export(folder, Path(bundle), name, card)}", flush=True)
    return folder
