"""Training checkpoints: safetensors tensors + a JSON state, written atomically, found again after a kill.

Layout under a run folder::

    checkpoints/step-00000500/tensors.safetensors   model.*, ema.*, optimizer.* tensors (no pickle anywhere);
                                                    tensors-00002.safetensors … when over SHARD_BYTES (safetensors
                                                    copies what it writes: shards bound that copy for big models)
    checkpoints/step-00000500/state.json            step, optimizer param groups, RNG, counters, metrics
    checkpoints/latest                              the name of the newest complete checkpoint

A checkpoint is built in a hidden temp folder beside the others and renamed into place only when both files
are written and fsynced, then ``latest`` is replaced atomically; a run killed at any moment leaves the previous
checkpoint intact. Older checkpoints beyond ``keep`` are removed after the new one is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from engine.fileio import atomic_write_bytes, fsync_dir

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TENSORS = "tensors.safetensors"
STATE = "state.json"
SHARD_BYTES = 512 * 2**20


@dataclass
class Checkpoint:
    step: int
    path: Path
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors saved under ``prefix.`` with the prefix stripped (e.g. the model's state dict)."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.tensors.items() if k.startswith(prefix + ".")}


def save_pretrained_atomically(model, folder: Path) -> Path:
    """``model.save_pretrained`` (safetensors) into ``folder`` through a staging folder renamed over it: a killed
    save leaves the previous folder, never half of one."""
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return folder


def step_name(step: int) -> str:
    return f"step-{step:08d}"


_fsync_dir = fsync_dir


def save_checkpoint(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any],
                    keep: int = 3) -> Path:
    """Write checkpoint ``step`` atomically and point ``latest`` at it; keep the newest ``keep`` checkpoints."""
    folder = Path(run_dir) / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / step_name(step)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=folder))
    try:
        names = []
        for index, shard in enumerate(_shards(tensors), start=1):
            name = TENSORS if index == 1 else f"tensors-{index:05d}.safetensors"
            save_file({k: v.detach().to("cpu").contiguous() for k, v in shard.items()}, str(work / name))
            names.append(name)
        (work / STATE).write_text(json.dumps({**state, "step": step, "shards": names}, indent=1, sort_keys=True) + "\n",
                                  encoding="utf-8")
        for name in (*names, STATE):
            with open(work / name, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():  # the same step saved again (Ctrl+C right after a periodic save)
            shutil.rmtree(final)
        os.replace(work, final)
        _fsync_dir(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    atomic_write_bytes(folder / LATEST, (final.name + "\n").encode("utf-8"))
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _shards(tensors: dict[str, torch.Tensor]):
    shard, size = {}, 0
    for key, value in tensors.items():
        nbytes = value.numel() * value.element_size()
        if shard and size + nbytes > SHARD_BYTES:
            yield shard
            shard, size = {}, 0
        shard[key] = value
        size += nbytes
    yield shard


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints (both files present), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step-*") if p.is_dir() and (p / TENSORS).is_file() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: p.name)


def load_checkpoint(path: Path) -> Checkpoint:
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    tensors = {}
    for name in state.get("shards", [TENSORS]):
        tensors.update(load_file(str(path / name)))
    return Checkpoint(step=int(state["step"]), path=path, tensors=tensors, state=state)


def load_latest_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The checkpoint ``latest`` names; if that is missing or unreadable, the newest complete one."""
    folder = Path(run_dir) / CHECKPOINTS
    candidates = list_checkpoints(run_dir)
    try:
        named = folder / (folder / LATEST).read_text(encoding="utf-8").strip()
        if named in candidates:
            candidates.remove(named)
            candidates.append(named)
    except OSError:
        pass
    for path in reversed(candidates):
        try:
            return load_checkpoint(path)
        except (OSError, ValueError, KeyError):
            continue  # a damaged checkpoint: fall back to the one before it
    return None


# ---------------------------------------------------------------------------------------------- optimizer


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state dict as flat tensors (``optimizer.<param index>.<key>``) + JSON-able groups."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, values in saved.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
