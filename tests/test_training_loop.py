"""The shared trainer: exact resume, checkpoints that survive a kill, the log, refusal of changed settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.training.checkpoint import list_checkpoints, load_latest_checkpoint
from engine.training.loop import train
from engine.training.task import TrainConfig, TrainingError, TrainingTask


class LineFit(TrainingTask):
    """y = 3x - 1 plus noise drawn from the step's generator: every source of randomness goes through the trainer."""

    name = "line"

    def describe(self):
        return {"what": "line fit"}

    def build_model(self):
        return torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def samples_per_step(self):
        return 16

    def make_batch(self, step, rng):
        x = torch.from_numpy(rng.uniform(-1, 1, (16, 1)).astype(np.float32))
        return {"x": x}

    def loss(self, model, batch, generator):
        x = batch["x"]
        y = 3 * x - 1 + 0.01 * torch.randn(x.shape, generator=generator)
        return torch.nn.functional.mse_loss(model(x), y), {}

    def validate(self, model):
        x = torch.linspace(-1, 1, 11)[:, None]
        with torch.no_grad():
            return {"val_mse": float(((model(x) - (3 * x - 1)) ** 2).mean())}


def _config(**overrides):
    values = dict(steps=40, lr=1e-2, checkpoint_every=10, log_every=5, ema_decay=0.9, progress=False, threads=1,
                  warmup_steps=5, validate_every=10, early_stop_metric="val_mse", early_stop_mode="min")
    values.update(overrides)
    return TrainConfig(**values)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_loss_goes_down_and_files_are_written(tmp_path):
    result = train(LineFit(), _config(), tmp_path / "run", resume=False)
    rows = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.2 * losses[0]
    assert (tmp_path / "run" / "loss.png").is_file()
    assert (tmp_path / "run" / "best.safetensors").is_file()
    validations = [r["val_mse"] for r in rows if "val_mse" in r]
    assert len(validations) == 4 and result.best_metrics["val_mse"] == pytest.approx(min(validations), abs=1e-6)
    assert min(validations) < 0.5 * validations[0]
    assert len(list_checkpoints(tmp_path / "run")) == 3  # keep_checkpoints
    assert load_latest_checkpoint(tmp_path / "run").step == 40


def test_resume_equals_uninterrupted(tmp_path):
    whole = train(LineFit(), _config(), tmp_path / "whole", resume=False)
    first = train(LineFit(), _config(steps=20), tmp_path / "split", resume=False)
    assert first.step == 20
    resumed = train(LineFit(), _config(), tmp_path / "split", resume=True)
    for key, value in _weights(whole.model).items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for key, value in whole.ema_model.state_dict().items():
        assert torch.equal(value, resumed.ema_model.state_dict()[key]), key
    log_whole = [{k: v for k, v in json.loads(l).items() if k not in ("samples_per_s", "train_hours")}
                 for l in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    log_split = [{k: v for k, v in json.loads(l).items() if k not in ("samples_per_s", "train_hours")}
                 for l in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert log_whole == log_split


def test_resume_from_checkpoint_before_a_crash(tmp_path):
    """Steps after the last checkpoint are lost and redone identically (what a kill -9 leaves)."""
    whole = train(LineFit(), _config(), tmp_path / "whole", resume=False)
    train(LineFit(), _config(steps=27), tmp_path / "crash", resume=False)  # checkpoints at 10, 20, 27
    # a kill between checkpoints: the newest checkpoint (27) never got written
    import shutil

    shutil.rmtree(tmp_path / "crash" / "checkpoints" / "step-00000027")
    (tmp_path / "crash" / "checkpoints" / ".step-00000030.partial-x").mkdir()  # a half-written one
    resumed = train(LineFit(), _config(), tmp_path / "crash", resume=True)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_a_kill_while_checkpointing_loses_no_log_row(tmp_path, monkeypatch):
    """The log is written before the checkpoint: a run killed right after a checkpoint landed resumes from it with
    every log row up to it, and ends with the uninterrupted run's log (written after, those rows were lost)."""
    import engine.training.loop as loop

    whole = [{k: v for k, v in json.loads(line).items() if k not in ("samples_per_s", "train_hours")}
             for line in _run_log(LineFit(), tmp_path / "whole")]
    real_save = loop.save_checkpoint

    def killed_after_30(run_dir, step, *args, **kwargs):
        written = real_save(run_dir, step, *args, **kwargs)
        if step == 30:  # the checkpoint has landed; the process dies before anything else is written
            raise KeyboardInterrupt("killed right after the checkpoint")
        return written

    monkeypatch.setattr(loop, "save_checkpoint", killed_after_30)
    with pytest.raises(KeyboardInterrupt):
        train(LineFit(), _config(), tmp_path / "killed", resume=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert load_latest_checkpoint(tmp_path / "killed").step == 30
    train(LineFit(), _config(), tmp_path / "killed", resume=True)
    resumed = [{k: v for k, v in json.loads(line).items() if k not in ("samples_per_s", "train_hours")}
               for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert resumed == whole


def _run_log(task, run_dir):
    train(task, _config(), run_dir, resume=False)
    return (run_dir / "log.jsonl").read_text().splitlines()


def test_resume_refuses_other_settings(tmp_path):
    train(LineFit(), _config(steps=10), tmp_path / "run", resume=False)
    with pytest.raises(TrainingError, match="lr"):
        train(LineFit(), _config(steps=20, lr=5e-3), tmp_path / "run", resume=True)
    # more steps is allowed
    assert train(LineFit(), _config(steps=20), tmp_path / "run", resume=True).step == 20


def test_checkpoint_carries_its_settings_when_run_json_is_gone(tmp_path):
    """run.json deleted (or replaced) but checkpoints left: the checkpoint's own record still refuses other settings."""
    train(LineFit(), _config(steps=10), tmp_path / "run", resume=False)
    (tmp_path / "run" / "run.json").unlink()
    with pytest.raises(TrainingError, match="config.lr"):
        train(LineFit(), _config(steps=20, lr=5e-3), tmp_path / "run", resume=True)
    assert not (tmp_path / "run" / "run.json").exists()  # the refused run wrote no record of its own settings
    assert train(LineFit(), _config(steps=20), tmp_path / "run", resume=True).step == 20
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["lr"] == pytest.approx(1e-2)


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, lr_schedule="cosine", steps=14, min_lr=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.25)
    assert cfg.lr_at(3) == pytest.approx(1.0)
    assert cfg.lr_at(4) == pytest.approx(1.0)
    assert cfg.lr_at(9) == pytest.approx(0.55)
    assert cfg.lr_at(14) == pytest.approx(0.1)


def test_big_checkpoints_are_sharded_and_read_back(tmp_path, monkeypatch):
    import engine.training.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "SHARD_BYTES", 1000)
    tensors = {f"model.w{i}": torch.randn(100) for i in range(7)}
    checkpoint.save_checkpoint(tmp_path, 5, tensors, {"note": 1})
    loaded = checkpoint.load_latest_checkpoint(tmp_path)
    assert len(loaded.state["shards"]) == 4 and loaded.step == 5
    assert all(torch.equal(tensors[k], loaded.tensors[k]) for k in tensors)
