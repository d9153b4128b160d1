"""A trained network as a folder, the torch original every exporter reads: config.json (``model_class``, the
architecture, the training settings) + model.safetensors (the weights), written atomically. One writer and one
reader for every network here, each naming what goes into its config and which class the folder must hold."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def write_model_folder(model, config: dict, folder, extra_files: dict[str, bytes] | None = None) -> Path:
    """``model``'s weights, any ``extra_files`` (name → bytes) and, last, ``config`` (which carries its
    ``model_class``) into ``folder``: a folder with its config is complete."""
    from safetensors.torch import save

    from engine.fileio import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / WEIGHTS_NAME, save(state))
    for name, data in (extra_files or {}).items():
        atomic_write_bytes(folder / name, data)
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(config, indent=1) + "\n").encode("utf-8"))
    return folder


def read_model_config(folder, model_class: str, what: str) -> dict:
    """The config of a folder that must hold a ``model_class``; InputError naming the file otherwise (``what``: how
    the message names the folder, e.g. "a compact model folder")."""
    from engine.errors import InputError

    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not {what} ({exc})") from None
    if config.get("model_class") != model_class:
        raise InputError(f"{path}: model_class is {config.get('model_class')!r}, not {model_class}")
    return config


def load_weights(model, folder):
    """``model`` with the folder's weights, in eval mode."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS_NAME)))
    return model.eval()
