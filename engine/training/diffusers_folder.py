"""The diffusers pipeline folders a run starts from (``--from``): what their U-Net takes in, read from its config,
so each task (SD-inpainting fine-tuning, the CCIS ControlNet) refuses the wrong kind of folder in one line."""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import InputError


def unet_in_channels(source: Path) -> int:
    """The U-Net's input channels of a diffusers pipeline folder; InputError naming the file it cannot read."""
    unet_config = source / "unet" / "config.json"
    if not (source / "model_index.json").is_file():
        raise InputError(f"{source}: not a diffusers pipeline folder (no model_index.json)")
    try:
        return int(json.loads(unet_config.read_text(encoding="utf-8"))["in_channels"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{unet_config}: cannot read the U-Net's in_channels ({exc})") from None
