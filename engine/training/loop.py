"""The one trainer: every PolypForge model (compact inpainting, SD-inpainting fine-tuning, the judge, the CCIS
ControlNet) is a ``TrainingTask`` (engine.training.task) run by ``train``.

What the trainer owns, so no task writes it again:
- the optimiser (AdamW), the learning rate as a pure function of the step (warmup, then constant or cosine),
  gradient accumulation and clipping, an EMA of the weights (its decay warmed up from the start, so a short run's
  EMA is not mostly the random initial weights), accelerate for mixed precision and several processes;
- determinism: the data of step s is ``task.make_batch(s, rng(seed, s, micro, rank))`` (built ahead in worker
  processes with ``loader_workers``: engine.training.prefetch) and its noise comes from a
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

import copy
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.fileio import atomic_write, atomic_write_bytes
from engine.training.checkpoint import (
    load_latest_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from engine.training.run_files import (
    LOG,
    RUN_RECORD,
    changed_settings,
    read_log,
    read_record,
    write_log,
    write_record,
)
from engine.training.task import (
    TrainConfig,
    TrainingError,
    TrainingInterrupted,
    TrainingTask,
    TrainResult,
)


class ExponentialMovingAverage:
    """EMA of parameters (and a copy of buffers). Decay warms up as min(decay, (1 + n) / (10 + n))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadows, values = [], []
        with torch.no_grad():
            for key, value in model.state_dict().items():
                if value.dtype.is_floating_point:
                    shadows.append(self.shadow[key])
                    values.append(value.detach().float())
                else:
                    self.shadow[key].copy_(value)
            if shadows:  # all tensors in two calls (a GPU run: two kernels' worth of launches, not two per tensor)
                torch._foreach_mul_(shadows, decay)
                torch._foreach_add_(shadows, values, alpha=1.0 - decay)

    def to(self, device) -> None:
        """Keep the shadow where the model is (a GPU run updates it there every step)."""
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}

    def copy_into(self, model: torch.nn.Module) -> torch.nn.Module:
        model.load_state_dict({k: v.to(dtype=model.state_dict()[k].dtype) for k, v in self.shadow.items()})
        return model


def step_rng(seed: int, step: int, micro: int = 0, rank: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, micro, rank])


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0, device=None) -> torch.Generator:
    words = np.random.default_rng([seed, step, micro, rank, 7]).integers(0, 2**62)
    generator = torch.Generator(device=device or "cpu")
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


def _refuse_other_settings(run_dir: Path, previous: dict, record: dict) -> None:
    changed = changed_settings(previous, record, sections=("task", "config"))
    if changed:
        raise TrainingError(
            f"{run_dir}: holds a run made with other settings ({', '.join(changed)}); "
            "resume it with the same settings, or train into another folder"
        )


def _check_run_record(run_dir: Path, record: dict, resume: bool) -> None:
    """Refuse a resume with other settings than run.json's; write run.json (provenance kept from the first run)."""
    path = run_dir / RUN_RECORD
    previous = read_record(path) if resume and path.is_file() else None
    if previous is not None:
        _refuse_other_settings(run_dir, previous, record)
        record = {**record, "provenance": {**record.get("provenance", {}), **previous.get("provenance", {})}}
    write_record(path, record)


def _clear_stale(run_dir: Path) -> None:
    """A fresh run (no resume) starts without the earlier run's checkpoints, sample grids and best weights."""
    for stale in (run_dir / "checkpoints", run_dir / "samples"):
        if stale.exists():
            shutil.rmtree(stale)
    (run_dir / "best.safetensors").unlink(missing_ok=True)


@dataclass
class _Counters:
    """Where a run stands, carried by each checkpoint: the step, training time and the validations so far."""

    step: int = 0
    train_seconds: float = 0.0
    best_value: float | None = None
    bad_validations: int = 0
    best_metrics: dict = field(default_factory=dict)

    @classmethod
    def of(cls, checkpoint) -> _Counters:
        state = checkpoint.state
        return cls(step=checkpoint.step, train_seconds=float(state.get("train_seconds", 0.0)),
                   best_value=state.get("best_value"), bad_validations=int(state.get("bad_validations", 0)),
                   best_metrics=dict(state.get("best_metrics", {})))


class _Run:
    """One invocation of ``train``: the prepared model, optimiser and EMA, the counters, the log and the bar."""

    def __init__(self, task: TrainingTask, config: TrainConfig, run_dir: Path, resume: bool):
        run_dir.mkdir(parents=True, exist_ok=True)
        if config.threads:
            torch.set_num_threads(int(config.threads))
        self.task, self.config, self.run_dir = task, config, run_dir
        self.prefetcher = None
        if config.loader_workers:  # forked before accelerate touches the GPU
            from engine.training.prefetch import BatchPrefetcher

            task.warm_up()  # what every batch reads, measured once here rather than once per worker
            self.prefetcher = BatchPrefetcher(task, step_rng, int(config.loader_workers), config.seed)
        try:
            self._start(resume)
        except BaseException:
            self.close_loader()
            raise

    def _start(self, resume: bool) -> None:
        from accelerate import Accelerator

        task, config, run_dir = self.task, self.config, self.run_dir
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision)
        self.rank, self.is_main = self.accelerator.process_index, self.accelerator.is_main_process
        self.record = {"task_name": task.name, "task": task.describe(), "config": config.shaping(),
                       "provenance": task.provenance()}
        self.checkpoint = load_latest_checkpoint(run_dir) if resume else None
        if self.checkpoint is not None and "run_record" in self.checkpoint.state:
            # The checkpoint carries its own settings: a run folder whose run.json was lost or replaced still
            # refuses to continue with other ones.
            _refuse_other_settings(run_dir, self.checkpoint.state["run_record"], self.record)
        if self.is_main:
            _check_run_record(run_dir, self.record, resume)
        model, optimizer = self._build()
        self.counters = _Counters()
        if self.checkpoint is not None:
            self._restore(model, optimizer)
        elif not resume:
            _clear_stale(run_dir)
        self.start_step = self.counters.step
        self.log_rows = read_log(run_dir / LOG, self.start_step) if self.checkpoint is not None else []
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.bare = self.accelerator.unwrap_model(self.model)
        if self.ema is not None:
            self.ema.to(self.accelerator.device)
        if self.prefetcher is not None:
            self.prefetcher.rank = self.rank
            self.prefetcher.start(self.start_step, config.steps, config.grad_accum)
        self.stopped_early, self.last_loss = False, None
        self.bar = None
        if config.progress and self.is_main:
            from tqdm import tqdm

            self.bar = tqdm(total=config.steps, initial=min(self.start_step, config.steps), unit="step",
                            dynamic_ncols=True, desc=task.name, mininterval=1.0)
        self._new_window()

    def _build(self) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """The task's model (seeded; a fresh run from the task's warm start), its optimiser and EMA."""
        config = self.config
        torch.manual_seed(config.seed)
        model = self.task.build_model()
        if self.checkpoint is None:
            initial = self.task.initial_state()
            if initial is not None:
                model.load_state_dict(initial)
        groups = [group for group in self.task.parameter_groups(model) if group["params"]]
        self.parameters = [p for group in groups for p in group["params"]]
        if not self.parameters:
            raise TrainingError(f"task {self.task.name}: no trainable parameters")
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas),
                                      weight_decay=config.weight_decay)
        self.ema = ExponentialMovingAverage(model, config.ema_decay) if config.ema_decay else None
        return model, optimizer

    def _restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Weights, optimiser, EMA, torch RNG and counters from the checkpoint resumed."""
        checkpoint = self.checkpoint
        model.load_state_dict(checkpoint.group("model"))
        optimizer_from_tensors(optimizer, checkpoint.tensors, checkpoint.state["optimizer"])
        if self.ema is not None:
            self.ema.shadow = {k: v.float() for k, v in checkpoint.group("ema").items()}
            self.ema.updates = int(checkpoint.state.get("ema_updates", 0))
        if "torch_rng" in checkpoint.tensors:
            torch.set_rng_state(checkpoint.tensors["torch_rng"])
        self.counters = _Counters.of(checkpoint)

    # ------------------------------------------------------------------ one step
    def _new_window(self) -> None:
        """Start the logging window the next log row averages over."""
        self.window_loss, self.window_samples, self.window_started = [], 0, time.perf_counter()

    def _micro_step(self, step: int, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss and backward of one micro-batch; its data and noise depend on (seed, step, micro, rank) alone."""
        config, accelerator = self.config, self.accelerator
        if self.prefetcher is not None:
            raw = self.prefetcher.get(step, micro)
        else:
            raw = self.task.make_raw_batch(step, step_rng(config.seed, step, micro, self.rank))
        batch = _to_device(self.task.collate(raw), accelerator.device)
        on_gpu = self.task.noise_on_device and accelerator.device.type != "cpu"
        generator = step_generator(config.seed, step, micro, self.rank, accelerator.device if on_gpu else None)
        sync = micro == config.grad_accum - 1
        context = accelerator.no_sync(self.model) if not sync and accelerator.num_processes > 1 else nullcontext()
        with context, accelerator.autocast():
            loss, metrics = self.task.loss(self.model, batch, generator)
            if not torch.isfinite(loss):
                raise TrainingError(f"step {step}: the loss is {loss.item()} (diverged); lower the learning rate "
                                    "and resume from the last checkpoint")
            accelerator.backward(loss / config.grad_accum)
        return loss, metrics

    def train_step(self) -> None:
        """One optimiser step over ``grad_accum`` micro-batches, then the EMA, the counters and the log."""
        config, step, started = self.config, self.counters.step, time.perf_counter()
        self.model.train()
        lr = config.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        metrics_sum: dict[str, float] = {}
        loss_sum = 0.0
        for micro in range(config.grad_accum):
            loss, metrics = self._micro_step(step, micro)
            loss_sum += float(loss.detach()) / config.grad_accum
            for key, value in metrics.items():
                metrics_sum[key] = metrics_sum.get(key, 0.0) + float(value) / config.grad_accum
        if config.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.parameters, config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.bare)
        self.counters.step += 1
        self.last_loss = loss_sum
        self.counters.train_seconds += time.perf_counter() - started
        self.window_loss.append(loss_sum)
        self.window_samples += self.task.samples_per_step() * config.grad_accum * self.accelerator.num_processes
        self._log(lr, metrics_sum)

    def _log(self, lr: float, metrics: dict[str, float]) -> None:
        """A log row every ``log_every`` steps and at the last: the window's mean loss, samples/s, metrics."""
        step, counters = self.counters.step, self.counters
        if step % self.config.log_every == 0 or step == self.config.steps:
            seconds = time.perf_counter() - self.window_started
            row = {"step": step, "loss": float(np.mean(self.window_loss)), "lr": lr,
                   "samples_per_s": round(self.window_samples / max(seconds, 1e-9), 3),
                   "train_hours": round(counters.train_seconds / 3600.0, 4),
                   **{k: round(v, 6) for k, v in metrics.items()}}
            self.log_rows.append(row)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{row['loss']:.4f}", samples_s=f"{row['samples_per_s']:.1f}", refresh=False)
            self._new_window()
        if self.bar is not None:
            self.bar.update(1)

    # ------------------------------------------------------------------ looking at the weights
    def eval_model(self) -> torch.nn.Module:
        """The weights to look at: the EMA when there is one (a copy; training weights untouched)."""
        if self.ema is None:
            return self.bare
        return self.ema.copy_into(copy.deepcopy(self.bare)).eval()

    def look(self) -> None:
        """Validation (and early stopping) every ``validate_every`` steps, a sample grid every ``sample_every``."""
        config, step = self.config, self.counters.step
        if config.validate_every and step % config.validate_every == 0 and self.is_main:
            values = self.task.validate(self.eval_model())
            if values:
                self.log_rows.append({"step": step, **{k: round(float(v), 6) for k, v in values.items()}})
                if self.bar is not None:
                    self.bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
                self._early_stop(values)
        if config.sample_every and step % config.sample_every == 0 and self.is_main:
            self.task.sample_grid(self.eval_model(), step, self.run_dir / "samples" / f"step-{step:08d}.png")

    def _early_stop(self, values: dict[str, float]) -> None:
        """Keep the best validation's weights (best.safetensors); stop after ``patience`` validations without one."""
        config, counters, metric = self.config, self.counters, self.config.early_stop_metric
        if not metric or metric not in values:
            return
        value, best = float(values[metric]), counters.best_value
        if best is None or (value > best if config.early_stop_mode == "max" else value < best):
            counters.best_value, counters.bad_validations = value, 0
            counters.best_metrics = {k: float(v) for k, v in values.items()}
            counters.best_metrics["step"] = counters.step
            _save_best(self.run_dir, self.eval_model())
        else:
            counters.bad_validations += 1
            if config.patience is not None and counters.bad_validations >= config.patience:
                self.stopped_early = True

    # ------------------------------------------------------------------ checkpoint and the end
    def snapshot(self) -> None:
        """Checkpoint the step (weights, optimiser, EMA, RNG, counters, settings), the log and the loss curve."""
        if not self.is_main:
            return
        counters, optimizer = self.counters, self.optimizer
        tensors = {f"model.{k}": v for k, v in self.bare.state_dict().items()}
        opt_tensors, opt_state = optimizer_to_tensors(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer)
        tensors.update(opt_tensors)
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.shadow.items()})
        tensors["torch_rng"] = torch.get_rng_state()
        state = {"optimizer": opt_state, "ema_updates": self.ema.updates if self.ema else 0,
                 "train_seconds": counters.train_seconds, "best_value": counters.best_value,
                 "bad_validations": counters.bad_validations, "best_metrics": counters.best_metrics,
                 "task_name": self.task.name, "seed": self.config.seed,
                 "run_record": {"task_name": self.task.name, "task": self.record["task"],
                                "config": self.record["config"]}}
        # The log first: a resume keeps only its rows up to the checkpoint it starts from, so a kill between the two
        # writes loses nothing (the other order lost the rows since the previous checkpoint).
        write_log(self.run_dir / LOG, self.log_rows)
        save_checkpoint(self.run_dir, counters.step, tensors, state, keep=self.config.keep_checkpoints)
        _draw_loss_curve(self.run_dir, self.log_rows)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def close_loader(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
            self.prefetcher = None

    def finish(self) -> TrainResult:
        """Close the run: a checkpoint when it trained nothing new, the last sample grid, the best weights."""
        self.close_bar()
        step = self.counters.step
        if step == self.start_step and self.checkpoint is None:
            self.snapshot()
        final_grid = self.run_dir / "samples" / f"step-{step:08d}.png"
        if self.is_main and self.config.sample_every and step > self.start_step and not final_grid.exists():
            self.task.sample_grid(self.eval_model(), step, final_grid)
        best_state = None
        if (self.run_dir / "best.safetensors").is_file():
            from safetensors.torch import load_file

            best_state = load_file(str(self.run_dir / "best.safetensors"))
        ema_model = self.eval_model() if self.ema is not None else None
        return TrainResult(step=step, run_dir=self.run_dir, model=self.bare, ema_model=ema_model,
                           stopped_early=self.stopped_early, best_metrics=self.counters.best_metrics,
                           best_state=best_state, train_seconds=self.counters.train_seconds, last_loss=self.last_loss)


def train(task: TrainingTask, config: TrainConfig, run_dir: Path, resume: bool = True) -> TrainResult:
    """Train ``task`` into ``run_dir`` (resuming from its newest checkpoint when ``resume``)."""
    run = _Run(task, config, Path(run_dir), resume)
    invocation_started = time.perf_counter()
    try:
        _train_steps(run, config, run_dir, invocation_started)
    finally:
        run.close_loader()
    return run.finish()


def _train_steps(run: _Run, config: TrainConfig, run_dir: Path, invocation_started: float) -> None:
    with _StopSignal() as stop:
        while run.counters.step < config.steps:
            run.train_step()
            run.look()
            step = run.counters.step
            out_of_time = (config.max_seconds is not None
                           and time.perf_counter() - invocation_started >= config.max_seconds)
            if step % config.checkpoint_every == 0 or step == config.steps or stop.raised or run.stopped_early \
                    or out_of_time:
                run.snapshot()
            if stop.raised:
                run.close_bar()
                raise TrainingInterrupted(f"stopped at step {step}; checkpoint written to {run_dir}/checkpoints "
                                          "(rerun with --resume to continue)")
            if run.stopped_early or out_of_time:
                break


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


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
