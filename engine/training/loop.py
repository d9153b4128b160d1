"""The one trainer: every PolypForge model (compact inpainting, SD-inpainting fine-tuning, the judge, the CCIS
ControlNet) is a ``TrainingTask`` run by ``train``.

What the trainer owns, so no task writes it again:
- the optimiser (AdamW), the learning rate as a pure function of the step (warmup, then constant or cosine),
  gradient accumulation and clipping, an EMA of the weights (its decay warmed up from the start, so a short run's
  EMA is not mostly the random initial weights), accelerate for mixed precision and several processes;
- determinism: the data of step s is ``task.make_batch(s, rng(seed, s, micro, rank))`` and its noise comes from a
  torch generator seeded the same way, so the data order and noise depend on the step alone. A run resumed from a
  checkpoint therefore continues exactly like an uninterrupted one (same weights bit for bit on a CPU);
- checkpoints (engine.training.checkpoint: safetensors, atomic) every ``checkpoint_every`` steps, at the end, and
  at Ctrl+C / SIGTERM; ``resume`` continues from the newest one and refuses a run folder made with other settings;
- a tqdm bar (step, loss, samples/s, ETA), ``log.jsonl`` (one line per logged step; lines past the checkpoint a
  resumed run starts from are dropped, so the log reads as one run), ``loss.png``, sample grids on fixed
  validation data every ``sample_every`` steps (``samples/step-*.png``), validation metrics and early stopping,
  and ``best.safetensors`` (the weights of the best validation).
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import PolypForgeError
from engine.fileio import atomic_write, atomic_write_bytes
from engine.training.checkpoint import (
    load_latest_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)

RUN_RECORD = "run.json"
LOG = "log.jsonl"


class TrainingError(PolypForgeError):
    """A training run cannot start or continue (bad data, a run folder made with other settings)."""


class TrainingInterrupted(PolypForgeError):
    """Ctrl+C / SIGTERM: the latest state was checkpointed; ``--resume`` continues it."""


class TrainingTask:
    """What a model brings to the trainer. Subclass and fill in."""

    name = "task"

    def describe(self) -> dict:
        """What shapes the run (data, sizes, objective): stored in run.json; a resume with another refuses."""
        return {}

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def samples_per_step(self) -> int:
        """Training samples in one micro-batch (for the samples/s figure)."""
        return 1

    def make_batch(self, step: int, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

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

    # Fields that may differ when a run is resumed: how long, how often, how it is shown.
    RESUMABLE_CHANGES = ("steps", "checkpoint_every", "sample_every", "validate_every", "log_every",
                         "keep_checkpoints", "patience", "threads", "progress", "max_seconds", "mixed_precision")

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


class ExponentialMovingAverage:
    """EMA of parameters (and a copy of buffers). Decay warms up as min(decay, (1 + n) / (10 + n))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for key, value in model.state_dict().items():
                shadow = self.shadow[key]
                if value.dtype.is_floating_point:
                    shadow.mul_(decay).add_(value.detach().float(), alpha=1.0 - decay)
                else:
                    shadow.copy_(value)

    def copy_into(self, model: torch.nn.Module) -> torch.nn.Module:
        model.load_state_dict({k: v.to(dtype=model.state_dict()[k].dtype) for k, v in self.shadow.items()})
        return model


def step_rng(seed: int, step: int, micro: int = 0, rank: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, micro, rank])


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    words = np.random.default_rng([seed, step, micro, rank, 7]).integers(0, 2**62)
    generator = torch.Generator()
    generator.manual_seed(int(words))
    return generator


class _StopSignal:
    """Ctrl+C and SIGTERM set a flag; the loop checkpoints at the end of the step and stops."""

    def __init__(self):
        self.raised = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        if self.raised:  # a second Ctrl+C: stop now
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _read_log(path: Path, up_to_step: int) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(row, dict) and row.get("step", 0) <= up_to_step:
            rows.append(row)
    return rows


def _write_log(path: Path, rows: list[dict]) -> None:
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode("utf-8")
    atomic_write_bytes(path, data)


def _changed_settings(previous: dict, record: dict) -> list[str]:
    """The ``task.*`` / ``config.*`` settings that differ between two run records (as JSON would store them)."""
    record = json.loads(json.dumps(record))
    return sorted(
        f"{section}.{key}"
        for section in ("task", "config")
        for key in set(previous.get(section, {})) | set(record.get(section, {}))
        if previous.get(section, {}).get(key) != record.get(section, {}).get(key)
    )


def _refuse_other_settings(run_dir: Path, changed: list[str]) -> None:
    if changed:
        raise TrainingError(
            f"{run_dir}: holds a run made with other settings ({', '.join(changed)}); "
            "resume it with the same settings, or train into another folder"
        )


def _check_run_record(run_dir: Path, record: dict, resume: bool) -> None:
    path = run_dir / RUN_RECORD
    if resume and path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
        if previous is not None:
            _refuse_other_settings(run_dir, _changed_settings(previous, record))
            record = {**record, "provenance": {**record.get("provenance", {}), **previous.get("provenance", {})}}
    atomic_write_bytes(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def train(task: TrainingTask, config: TrainConfig, run_dir: Path, resume: bool = True) -> TrainResult:
    """Train ``task`` into ``run_dir`` (resuming from its newest checkpoint when ``resume``)."""
    from accelerate import Accelerator

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    rank, is_main = accelerator.process_index, accelerator.is_main_process
    record = {"task_name": task.name, "task": task.describe(), "config": config.shaping(), "provenance": task.provenance()}
    checkpoint = load_latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None and "run_record" in checkpoint.state:
        # The checkpoint carries its own settings: a run folder whose run.json was lost or replaced still refuses
        # to continue with other ones.
        _refuse_other_settings(run_dir, _changed_settings(checkpoint.state["run_record"], record))
    if is_main:
        _check_run_record(run_dir, record, resume)
    torch.manual_seed(config.seed)
    model = task.build_model()
    if checkpoint is None:
        initial = task.initial_state()
        if initial is not None:
            model.load_state_dict(initial)
    parameters = task.trainable_parameters(model)
    if not parameters:
        raise TrainingError(f"task {task.name}: no trainable parameters")
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    ema = ExponentialMovingAverage(model, config.ema_decay) if config.ema_decay else None

    start_step, train_seconds, best_value, bad_validations, best_metrics = 0, 0.0, None, 0, {}
    if checkpoint is not None:
        model.load_state_dict(checkpoint.group("model"))
        optimizer_from_tensors(optimizer, checkpoint.tensors, checkpoint.state["optimizer"])
        if ema is not None:
            ema.shadow = {k: v.float() for k, v in checkpoint.group("ema").items()}
            ema.updates = int(checkpoint.state.get("ema_updates", 0))
        if "torch_rng" in checkpoint.tensors:
            torch.set_rng_state(checkpoint.tensors["torch_rng"])
        start_step = checkpoint.step
        train_seconds = float(checkpoint.state.get("train_seconds", 0.0))
        best_value = checkpoint.state.get("best_value")
        bad_validations = int(checkpoint.state.get("bad_validations", 0))
        best_metrics = dict(checkpoint.state.get("best_metrics", {}))
    elif not resume:
        for stale in (run_dir / "checkpoints", run_dir / "samples"):
            if stale.exists():
                import shutil

                shutil.rmtree(stale)
        (run_dir / "best.safetensors").unlink(missing_ok=True)
    log_rows = _read_log(run_dir / LOG, start_step) if checkpoint is not None else []

    model, optimizer = accelerator.prepare(model, optimizer)
    bare = accelerator.unwrap_model(model)

    def snapshot(step: int) -> None:
        if not is_main:
            return
        tensors = {f"model.{k}": v for k, v in bare.state_dict().items()}
        opt_tensors, opt_state = optimizer_to_tensors(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer)
        tensors.update(opt_tensors)
        if ema is not None:
            tensors.update({f"ema.{k}": v for k, v in ema.shadow.items()})
        tensors["torch_rng"] = torch.get_rng_state()
        state = {"optimizer": opt_state, "ema_updates": ema.updates if ema else 0, "train_seconds": train_seconds,
                 "best_value": best_value, "bad_validations": bad_validations, "best_metrics": best_metrics,
                 "task_name": task.name, "seed": config.seed,
                 "run_record": {"task_name": task.name, "task": record["task"], "config": record["config"]}}
        save_checkpoint(run_dir, step, tensors, state, keep=config.keep_checkpoints)
        _write_log(run_dir / LOG, log_rows)
        _draw_loss_curve(run_dir, log_rows)

    def eval_model() -> torch.nn.Module:
        """The weights to look at: the EMA when there is one (a copy; training weights untouched)."""
        if ema is None:
            return bare
        import copy

        return ema.copy_into(copy.deepcopy(bare)).eval()

    bar = None
    if config.progress and is_main:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=min(start_step, config.steps), unit="step", dynamic_ncols=True,
                   desc=task.name, mininterval=1.0)
    step, stopped_early, last_loss = start_step, False, None
    invocation_started = time.perf_counter()
    out_of_time = False
    window_loss, window_samples, window_started = [], 0, time.perf_counter()
    with _StopSignal() as stop:
        while step < config.steps:
            step_started = time.perf_counter()
            model.train()
            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            metrics_sum: dict[str, float] = {}
            loss_sum = 0.0
            for micro in range(config.grad_accum):
                batch = _to_device(task.make_batch(step, step_rng(config.seed, step, micro, rank)), accelerator.device)
                generator = step_generator(config.seed, step, micro, rank)
                sync = micro == config.grad_accum - 1
                context = accelerator.no_sync(model) if not sync and accelerator.num_processes > 1 else _nullcontext()
                with context, accelerator.autocast():
                    loss, metrics = task.loss(model, batch, generator)
                    if not torch.isfinite(loss):
                        raise TrainingError(f"step {step}: the loss is {loss.item()} (diverged); lower the learning rate "
                                            "and resume from the last checkpoint")
                    accelerator.backward(loss / config.grad_accum)
                loss_sum += float(loss.detach()) / config.grad_accum
                for key, value in metrics.items():
                    metrics_sum[key] = metrics_sum.get(key, 0.0) + float(value) / config.grad_accum
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(bare)
            step += 1
            last_loss = loss_sum
            elapsed = time.perf_counter() - step_started
            train_seconds += elapsed
            window_loss.append(loss_sum)
            window_samples += task.samples_per_step() * config.grad_accum * accelerator.num_processes

            if step % config.log_every == 0 or step == config.steps:
                seconds = time.perf_counter() - window_started
                row = {"step": step, "loss": float(np.mean(window_loss)), "lr": lr,
                       "samples_per_s": round(window_samples / max(seconds, 1e-9), 3),
                       "train_hours": round(train_seconds / 3600.0, 4), **{k: round(v, 6) for k, v in metrics_sum.items()}}
                log_rows.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_s']:.1f}", refresh=False)
                window_loss, window_samples, window_started = [], 0, time.perf_counter()
            if bar is not None:
                bar.update(1)

            if config.validate_every and step % config.validate_every == 0 and is_main:
                values = task.validate(eval_model())
                if values:
                    log_rows.append({"step": step, **{k: round(float(v), 6) for k, v in values.items()}})
                    if bar is not None:
                        bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
                    metric = config.early_stop_metric
                    if metric and metric in values:
                        value = float(values[metric])
                        better = best_value is None or (value > best_value if config.early_stop_mode == "max" else value < best_value)
                        if better:
                            best_value, bad_validations, best_metrics = value, 0, {k: float(v) for k, v in values.items()}
                            best_metrics["step"] = step
                            _save_best(run_dir, eval_model())
                        else:
                            bad_validations += 1
                            if config.patience is not None and bad_validations >= config.patience:
                                stopped_early = True
            if config.sample_every and step % config.sample_every == 0 and is_main:
                task.sample_grid(eval_model(), step, run_dir / "samples" / f"step-{step:08d}.png")
            if config.max_seconds is not None and time.perf_counter() - invocation_started >= config.max_seconds:
                out_of_time = True
            if step % config.checkpoint_every == 0 or step == config.steps or stop.raised or stopped_early or out_of_time:
                snapshot(step)
            if stop.raised:
                if bar is not None:
                    bar.close()
                raise TrainingInterrupted(f"stopped at step {step}; checkpoint written to {run_dir}/checkpoints "
                                          "(rerun with --resume to continue)")
            if stopped_early or out_of_time:
                break
    if bar is not None:
        bar.close()
    if step == start_step and checkpoint is None:
        snapshot(step)
    final_grid = run_dir / "samples" / f"step-{step:08d}.png"
    if is_main and config.sample_every and step > start_step and not final_grid.exists():
        task.sample_grid(eval_model(), step, final_grid)
    best_state = None
    if (run_dir / "best.safetensors").is_file():
        from safetensors.torch import load_file

        best_state = load_file(str(run_dir / "best.safetensors"))
    ema_model = eval_model() if ema is not None else None
    return TrainResult(step=step, run_dir=run_dir, model=bare, ema_model=ema_model, stopped_early=stopped_early,
                       best_metrics=best_metrics, best_state=best_state, train_seconds=train_seconds, last_loss=last_loss)


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _save_best(run_dir: Path, model: torch.nn.Module) -> None:
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    atomic_write_bytes(run_dir / "best.safetensors", data)


def _draw_loss_curve(run_dir: Path, rows: list[dict]) -> None:
    from engine.training.plots import loss_curve_png

    points = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    if len(points) >= 2:
        png = loss_curve_png(points)
        atomic_write(run_dir / "loss.png", lambda handle: handle.write(png))
