"""What the one trainer (engine.training.loop) and a model agree on: the ``TrainingTask`` a model fills in, the
``TrainConfig`` that sets the trainer, the ``TrainResult`` it hands back, and its two errors. Tasks and the
commands that build them import this, not the loop."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import PolypForgeError


class TrainingError(PolypForgeError):
    """A training run cannot start or continue (bad data, a run folder made with other settings)."""


class TrainingInterrupted(PolypForgeError):
    """Ctrl+C / SIGTERM: the latest state was checkpointed; ``--resume`` continues it."""


class TrainingTask:
    """What a model brings to the trainer. Subclass and fill in."""

    name = "task"
    # Whether ``loss`` takes a generator on the training device (it then draws with device=generator.device): the
    # same numbers on every run on that device, but not the CPU's numbers. False: a CPU generator everywhere.
    noise_on_device = False

    def describe(self) -> dict:
        """What shapes the run (data, sizes, objective): stored in run.json; a resume with another refuses."""
        return {}

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def parameter_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: ``params``, and where a group differs, ``lr_scale`` (its learning rate
        is the schedule's times this) and ``weight_decay``. One group of every trainable parameter unless a task
        says otherwise."""
        return [{"params": self.trainable_parameters(model)}]

    def samples_per_step(self) -> int:
        """Training samples in one micro-batch (for the samples/s figure)."""
        return 1

    def make_batch(self, step: int, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def warm_up(self) -> None:
        """Compute once what every batch reads (before worker processes fork and would each compute it)."""

    def make_raw_batch(self, step: int, rng: np.random.Generator) -> Any:
        """The batch's data in a form cheap to send between processes (the loop's ``--loader-workers`` build it in
        worker processes); ``collate`` turns it into ``make_batch``'s dict. By default the batch itself."""
        return self.make_batch(step, rng)

    def collate(self, raw: Any) -> dict[str, Any]:
        """``make_raw_batch``'s result as the tensors ``loss`` takes (in the training process)."""
        return raw

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        return {}

    def sample_grid(self, model: torch.nn.Module, step: int, path: Path) -> None:
        """Write a PNG a curator can look at (fixed validation data, fixed seeds)."""

    def provenance(self) -> dict:
        """Where the run came from (e.g. a warm start): kept in run.json from the first invocation on, not compared."""
        return {}

    def initial_state(self) -> dict[str, torch.Tensor] | None:
        """Weights to start a fresh run from (a warm start); not used when resuming from a checkpoint."""
        return None


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # or "cosine" (to min_lr at schedule_steps)
    schedule_steps: int | None = None  # cosine length; defaults to steps
    min_lr: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    ema_decay: float | None = 0.999
    seed: int = 0
    checkpoint_every: int = 100
    sample_every: int = 0  # 0: never (a grid is still drawn at the end when the task draws one)
    validate_every: int = 0
    log_every: int = 10
    keep_checkpoints: int = 3
    early_stop_metric: str | None = None
    early_stop_mode: str = "max"
    patience: int | None = None  # validations without improvement before stopping
    threads: int | None = None
    mixed_precision: str = "no"  # "fp16" / "bf16" on a GPU (accelerate)
    progress: bool = True
    max_seconds: float | None = None  # wall-clock budget of this invocation: checkpoint and stop when spent
    loader_workers: int = 0  # processes that build the coming batches ahead of the loop (0: built in the loop)

    # Fields that may differ when a run is resumed: how long, how often, how it is shown.
    RESUMABLE_CHANGES = ("steps", "checkpoint_every", "sample_every", "validate_every", "log_every",
                         "keep_checkpoints", "patience", "threads", "progress", "max_seconds", "mixed_precision",
                         "loader_workers")

    def shaping(self) -> dict:
        values = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k not in self.RESUMABLE_CHANGES}

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based): linear warmup, then constant or cosine."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        if self.lr_schedule == "cosine":
            length = max(1, (self.schedule_steps or self.steps) - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / length)
            return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))
        raise TrainingError(f"lr_schedule {self.lr_schedule!r} is not one of constant, cosine")


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    model: torch.nn.Module  # raw weights
    ema_model: torch.nn.Module | None
    stopped_early: bool = False
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    train_seconds: float = 0.0
    last_loss: float | None = None

    def final_model(self) -> torch.nn.Module:
        return self.ema_model if self.ema_model is not None else self.model
