"""The detail stage of the compact model: a small pixel-space conditional diffusion U-Net (PyTorch; export and
training only) that repaints the region crop at twice the base's working size (128² for the 64² base), seeing
the base's result upsampled (SR3 / Cascaded Diffusion, Saharia et al. 2021, Ho et al. 2021).

Why a second stage and not a bigger base: the 64² base is trained and good at structure (where the lesion is,
its shape, its colour); what it lacks at large regions is resolution. A stage that only has to add detail to a
given low-resolution picture learns fast and samples in a few steps, because the low-resolution input fixes the
structure. Why it is cheap: a space-to-depth stem of 2 runs its first level at 64², no attention.

Input: [noisy image (3), low-resolution image upsampled to this size (3), masked image (3; 0 inside the mask),
mask (1)] in [-1, 1] / {0, 1}, a timestep, and the conditioning-augmentation level: the timestep (of the same
noise schedule) at which Gaussian noise was added to the low-resolution image. Training draws that level at
random so the stage learns not to trust the low-resolution input's fine detail; sampling uses a small fixed
one (the base's output is not a real downsampled crop). Output: the v-prediction of the image, same shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.compact_unet import PixelUNetTrunk, timestep_embedding
from engine.models.folder import load_weights, read_model_config, write_model_folder

MODEL_CLASS = "DetailUNet"


@dataclass
class DetailConfig:
    image_channels: int = 3
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: int = 1  # res blocks per level (down); the up path has blocks + 1
    stem: int = 2  # space-to-depth factor of the stem: the first level runs at half the resolution
    groups: int = 8

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> DetailConfig:
        values = dict(data)
        values["widths"] = tuple(values.get("widths", ()))
        return cls(**values)

    @property
    def size_multiple(self) -> int:
        """Input sides must be a multiple of this: the stem times one halving per level below the first."""
        return self.stem * 2 ** (len(self.widths) - 1)

    @property
    def input_channels(self) -> int:
        """Noisy image, low-resolution image, masked image, mask."""
        return 3 * self.image_channels + 1


class DetailUNet(PixelUNetTrunk):
    """sample (B, 10, H, W), timestep (B,), noise_level (B,) → v (B, 3, H, W)."""

    def __init__(self, config: DetailConfig | None = None):
        super().__init__()
        self.config = config = config or DetailConfig()
        widths, s = config.widths, config.stem
        emb = 4 * widths[0]
        self.time_mlp = nn.Sequential(nn.Linear(widths[0], emb), nn.SiLU(), nn.Linear(emb, emb))
        self.level_mlp = nn.Sequential(nn.Linear(widths[0], emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(config.input_channels * s * s, widths[0], 3, padding=1)
        self._build_trunk(widths, config.blocks, emb, config.groups, heads=1,
                          out_channels=config.image_channels * s * s, mid_attention=False)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        s, batch, width0 = self.config.stem, sample.shape[0], self.config.widths[0]
        emb = self.time_mlp(timestep_embedding(timestep.reshape(-1).expand(batch), width0))
        emb = emb + self.level_mlp(timestep_embedding(noise_level.reshape(-1).expand(batch), width0))
        out = self._run_trunk(self.conv_in(F.pixel_unshuffle(sample, s) if s > 1 else sample), emb)
        return F.pixel_shuffle(out, s) if s > 1 else out


def save_detail_model(model: DetailUNet, task_config, folder):
    """The torch original as a folder: config.json (architecture + training settings) + model.safetensors."""
    config = {"model_class": MODEL_CLASS, "model": model.config.to_json(), "task": task_config.to_json()}
    return write_model_folder(model, config, folder)


def load_detail_model(folder) -> tuple[DetailUNet, dict]:
    config = read_model_config(folder, MODEL_CLASS, "a detail model folder")
    return load_weights(DetailUNet(DetailConfig.from_json(config["model"])), folder), config
