"""``main.py train-judge``: frames + masks → a trained judge → a "segmenter" bundle.

1. Read the frames (any layout the batch job reads; engine.evaluation.segdata) at cache size.
2. Hold out a validation split: ``--val DIR`` when given; else the input's own val/ split when it has one;
   else ~10 % by the sha256 of each file name (deterministic, recorded in bundle.json).
3. Train with the one trainer (engine.training.loop: checkpoints, exact resume, progress, log, early stopping
   on val Dice) into the run folder (default ``runs/<bundle name>``).
4. Score the best weights on the held-out frames at their own resolution (Dice, IoU, AP), export them to
   the bundle (torch.onnx, parity-checked), and write the figures into its bundle.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import InputError
from engine.evaluation import segdata
from engine.models.segmenter import DEFAULT_WIDTHS
from engine.training.recipe import train_config
from engine.training.task import TrainConfig

Log = Callable[[str], None]


@dataclass
class JudgeTraining:
    """Settings of a judge training run (the command's flags)."""

    input: Path
    to: Path
    val: Path | None = None
    run_dir: Path | None = None
    steps: int = 4000
    size: int = 128
    batch_size: int = 8
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    lr: float = 2e-3
    warmup_steps: int = 100
    seed: int = 0
    validate_every: int = 200
    patience: int | None = 8
    checkpoint_every: int = 100
    ema_decay: float | None = 0.999
    threads: int | None = None
    resume: bool = False
    cache: int = segdata.DEFAULT_CACHE
    name: str | None = None
    overwrite: bool = False
    progress: bool = True
    max_minutes: float | None = None  # this invocation's budget: checkpoint, stop and export the best so far
    extra_manifest: dict = field(default_factory=dict)

    def run_folder(self) -> Path:
        return self.run_dir or Path("runs") / Path(self.to).name


def split_data(settings: JudgeTraining, log: Log) -> tuple[segdata.SegmentationSet, segdata.SegmentationSet, dict]:
    """(train, val, split description)."""
    started = time.perf_counter()
    data = segdata.from_folder(settings.input, cache=settings.cache)
    for note in data.notes:
        log(note)
    log(f"read {len(data)} frames of {settings.input} in {time.perf_counter() - started:.0f} s")
    if settings.val is not None:
        val = segdata.from_folder(settings.val, cache=settings.cache)
        train, rule = data, f"--val {settings.val}"
    else:
        from engine.dataset.discovery import discover

        splits = {f.rel: f.split for f in discover(settings.input).frames}
        own_val = [i for i, n in enumerate(data.names) if splits.get(n) == "val"]
        if own_val:
            keep = [i for i in range(len(data)) if i not in set(own_val) and splits.get(data.names[i]) == "train"]
            train, val, rule = data.subset(keep), data.subset(own_val), "the input's val/ split"
        else:
            keep, held = segdata.holdout(data.names)
            train, val = data.subset(keep), data.subset(held)
            rule = (f"held out when the first 8 bytes of sha256(file stem), little-endian, / 2^64 < "
                    f"{segdata.HOLDOUT_FRACTION} (engine.dataset.splits.is_held_out)")
    if len(train) < 1:
        raise InputError(f"{settings.input}: no training frames left after the validation split")
    if len(val) < 1:
        raise InputError(f"{settings.input}: no validation frames (give --val DIR)")
    positives = int(sum(m.max() > 0 for m in train.masks))
    log(f"split: {len(train)} training frames ({positives} with a polyp), {len(val)} validation frames ({rule})")
    split = {"rule": rule, "train_frames": len(train), "val_frames": len(val), "val_names": sorted(val.names),
             "train_digest": train.digest(), "val_digest": val.digest()}
    return train, val, split


def judge_train_config(options, **settings) -> TrainConfig:
    """The trainer's settings of a judge run (train-judge, and each run of ``evaluate``): the options' steps, lr, …
    (engine.training.recipe.train_config) over a cosine schedule down to 5 % of the lr, a log row every 10 steps
    and early stopping on validation Dice, with ``settings`` for the rest."""
    return train_config(options, {"lr_schedule": "cosine", "min_lr": options.lr * 0.05, "log_every": 10,
                                  "early_stop_metric": "val_dice", "early_stop_mode": "max", **settings})


def best_network(task, result):
    """The weights to keep: the best validation's, else the EMA's, else the raw ones."""
    net = task.build_model()
    if result.best_state is not None:
        net.load_state_dict(result.best_state)
    else:
        net.load_state_dict(result.final_model().state_dict())
    return net.eval()


def torch_predictor(task, net) -> Callable:
    """frames → probability maps at frame size, through the same preprocessing as the runtime judge."""
    from engine.judge.preprocess import resize_frame, resize_probability

    def predict(frames):
        images = np.stack([resize_frame(f, task.size) for f in frames])
        small = task.predict(net, images)
        return [resize_probability(p, f.shape[1], f.shape[0]) for p, f in zip(small, frames)]

    return predict


def run_train_judge(settings: JudgeTraining, log: Log = print) -> dict:
    import torch

    from engine.judge.accuracy import score_frames, summarise
    from engine.evaluation.judge_task import JudgeTask
    from engine.export.segmenter_export import export_segmenter_bundle
    from engine.training.loop import train

    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    destination = Path(settings.to)
    if destination.exists() and any(destination.iterdir()) and not settings.overwrite and not settings.resume:
        raise InputError(f"{destination}: already exists (pass --overwrite to replace it, or --resume)")
    train_set, val_set, split = split_data(settings, log)
    task = JudgeTask(train_set, val_set, size=settings.size, batch_size=settings.batch_size, widths=settings.widths,
                     description={"input": str(Path(settings.input).resolve()), "rule": split["rule"]})
    run_dir = settings.run_folder()
    log(f"training into {run_dir} ({settings.steps} steps of {settings.batch_size} frames at {settings.size}², "
        f"{'resuming' if settings.resume else 'fresh'})")
    started = time.perf_counter()
    # No EMA / no patience when those options are None; a sample grid at each validation.
    config = judge_train_config(settings, sample_every=settings.validate_every, ema_decay=None, patience=None)
    result = train(task, config, run_dir, resume=settings.resume)
    net = best_network(task, result)
    log("scoring the kept weights on the validation frames at their own resolution")
    _, entries = segdata.folder_entries(settings.val or settings.input)
    held = set(val_set.names)
    val_entries = [e for e in entries if e[0] in held]
    rows = score_frames(torch_predictor(task, net), val_entries)
    validation = summarise(rows)
    log(f"validation ({len(rows)} frames, frame resolution): Dice {validation['dice']:.4f}, IoU "
        f"{validation['iou']:.4f}, AP50 {validation['ap50']}")
    training = {
        "data": str(Path(settings.input).resolve()), "split": split, "steps": result.step,
        "stopped_early": result.stopped_early, "max_minutes": settings.max_minutes, "train_minutes": round(result.train_seconds / 60.0, 2),
        "best_validation_at_training_size": result.best_metrics, "validation": validation,
        "size": settings.size, "batch_size": settings.batch_size, "lr": settings.lr, "seed": settings.seed,
        "threads": torch.get_num_threads(), "run_dir": str(run_dir),
        "wall_minutes_this_session": round((time.perf_counter() - started) / 60.0, 2),
        "weights": "best validation Dice" if result.best_state is not None else "final",
    }
    parity_frames = None
    if len(val_set):
        from engine.judge.preprocess import normalise

        images, _ = segdata.at_size(val_set.subset(range(min(4, len(val_set)))), settings.size)
        parity_frames = normalise(images)
    manifest = export_segmenter_bundle(
        net, destination, settings.size, name=settings.name or destination.name,
        description="polyp judge: a compact U-Net trained by PolypForge; an evaluation tool, not a diagnostic device",
        training=training, parity_frames=parity_frames, overwrite=True, extra=settings.extra_manifest, log=log)
    from engine.evaluation.model_card import write_judge_card

    card, _ = write_judge_card(destination)
    log(f"wrote {card}")
    return {"bundle": str(destination), "training": training, "parity": manifest["parity"]}
