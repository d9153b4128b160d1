"""The compact polyp model: a small pixel-space inpainting U-Net (PyTorch; export and training only).

Why pixel space: no pretrained VAE exists offline and one trained here in an afternoon would blur the mucosal
texture the model must paint; a model that sees pixels has nothing between it and the detail. Why it is cheap
enough: it works on the region around the mask (crop → ``resolution``² → paste back, see
engine.pipelines.framing.region_crop), and a space-to-depth stem (``stem``×``stem`` pixels per cell) runs its
first level at half the resolution, like a patch embedding.

Input: [noisy image (3), masked image (3; 0 inside the mask), mask (1)] in [-1, 1] / {0, 1}, a timestep and a
class label (0 = unconditional, 1 = "Polyp", 2 = "Normal": the two prompts of Polyp-Gen; 0 is what
classifier-free guidance contrasts with). Output: the v-prediction (Salimans & Ho) of the image, same shape.

Attribute conditioning (``CompactConfig.attributes``, empty by default: the model is then exactly what it was):
one learned embedding per clinical attribute (colour, surface, …: engine.captioning.conditioning), indexed 0 for
"not asked" (a row that stays zero: nothing asked adds nothing) and i for the i-th value, summed into the time +
class embedding beside the class label's. They start at zero, so a model warm-started from attribute-less weights
gives those weights' outputs until it learns them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.folder import load_weights, read_model_config, write_model_folder

CLASS_NAMES = ("", "Polyp", "Normal")  # index = class label; "" is the unconditional class


@dataclass
class CompactConfig:
    image_channels: int = 3
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: int = 1  # res blocks per level (down); the up path has blocks + 1
    attention_levels: tuple[int, ...] = ()  # level indices with self-attention after each block
    stem: int = 1  # space-to-depth factor of the stem (1 = none, 2 = half-resolution first level)
    heads: int = 4
    groups: int = 8
    num_classes: int = len(CLASS_NAMES)
    # (name, values) per conditioning attribute, in the order of the model's attribute input; index 0 of each is
    # "not asked", i the i-th value. Empty: no attribute input (and config.json says nothing of it).
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # The cell shortcut of a model with a stem (see CompactInpaintUNet.forward): the length of its gain table, one
    # gain per training timestep; 0 = none (config.json then says nothing of it).
    cell_shortcut: int = 0

    def to_json(self) -> dict:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k not in ("attributes", "cell_shortcut")}
        if self.attributes:
            data["attributes"] = [[name, list(values)] for name, values in self.attributes]
        if self.cell_shortcut:
            data["cell_shortcut"] = self.cell_shortcut
        return data

    @classmethod
    def from_json(cls, data: dict) -> "CompactConfig":
        values = dict(data)
        for key in ("widths", "attention_levels"):
            values[key] = tuple(values.get(key, ()))
        values["attributes"] = tuple((str(name), tuple(str(v) for v in options))
                                     for name, options in values.get("attributes", ()))
        return cls(**values)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.attributes)

    @property
    def size_multiple(self) -> int:
        """Input sides must be a multiple of this: the stem times one halving per level below the first."""
        return self.stem * 2 ** (len(self.widths) - 1)


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=timesteps.device)  # where the timesteps are (a GPU run)
    frequencies = torch.exp(-math.log(10000.0) * steps / half)
    angles = timesteps.float()[:, None] * frequencies[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over pixels, written with matmul/softmax (exports to any opset)."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        weights = torch.softmax(torch.einsum("bhdi,bhdj->bhij", q, k) / math.sqrt(c // self.heads), dim=-1)
        attended = torch.einsum("bhij,bhdj->bhdi", weights, v).reshape(b, c, h, w)
        return x + self.out(attended)


class PixelUNetTrunk(nn.Module):
    """The down / mid / up path and output head the pixel U-Nets here share (the compact U-Net, the detail stage):
    res blocks conditioned on an embedding, optional self-attention per level, skips concatenated on the way up.
    A subclass builds its own stem and embeddings, then ``_build_trunk``; its ``forward`` calls ``_run_trunk``."""

    def _build_trunk(self, widths, blocks: int, emb: int, groups: int, heads: int, out_channels: int,
                     attention_levels=(), mid_attention: bool = True) -> None:
        self.down = nn.ModuleList()
        skip_channels = [widths[0]]
        current = widths[0]
        for level, width in enumerate(widths):
            level_blocks = nn.ModuleList()
            for _ in range(blocks):
                level_blocks.append(ResBlock(current, width, emb, groups))
                current = width
                if level in attention_levels:
                    level_blocks.append(SelfAttention(width, heads, groups))
                skip_channels.append(width)
            if level < len(widths) - 1:
                level_blocks.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skip_channels.append(width)
            self.down.append(level_blocks)
        middle = [ResBlock(current, current, emb, groups)]
        if mid_attention:
            middle.append(SelfAttention(current, heads, groups))
        self.mid = nn.ModuleList([*middle, ResBlock(current, current, emb, groups)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            level_blocks = nn.ModuleList()
            for _ in range(blocks + 1):
                level_blocks.append(ResBlock(current + skip_channels.pop(), width, emb, groups))
                current = width
                if level in attention_levels:
                    level_blocks.append(SelfAttention(width, heads, groups))
            if level > 0:
                level_blocks.append(nn.Upsample(scale_factor=2, mode="nearest"))
                level_blocks.append(nn.Conv2d(width, width, 3, padding=1))
            self.up.append(level_blocks)
        self.norm_out = nn.GroupNorm(min(groups, current), current)
        self.conv_out = nn.Conv2d(current, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _run_trunk(self, h: torch.Tensor, emb: torch.Tensor, down_residuals: list[torch.Tensor] | None = None,
                   mid_residual: torch.Tensor | None = None) -> torch.Tensor:
        """From the stem's output to the head's (before any pixel shuffle); the residuals are a ControlNet's."""
        skips = [h]
        for blocks in self.down:
            for block in blocks:
                if isinstance(block, SelfAttention):
                    h = skips[-1] = block(h)  # the skip of a block is taken after its attention
                else:
                    h = block(h, emb) if isinstance(block, ResBlock) else block(h)
                    skips.append(h)
        for block in self.mid:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        if down_residuals is not None:
            if len(down_residuals) != len(skips):
                raise ValueError(f"{len(down_residuals)} down residuals for {len(skips)} skips")
            skips = [skip + residual for skip, residual in zip(skips, down_residuals)]
        if mid_residual is not None:
            h = h + mid_residual
        for blocks in self.up:
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(block, ResBlock) else block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class CompactInpaintUNet(PixelUNetTrunk):
    def __init__(self, config: CompactConfig | None = None):
        super().__init__()
        self.config = config = config or CompactConfig()
        widths, s = config.widths, config.stem
        emb = 4 * widths[0]
        in_channels = (2 * config.image_channels + 1) * s * s
        self.time_mlp = nn.Sequential(nn.Linear(widths[0], emb), nn.SiLU(), nn.Linear(emb, emb))
        self.class_embedding = nn.Embedding(config.num_classes, emb)
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self._build_trunk(widths, config.blocks, emb, config.groups, config.heads, config.image_channels * s * s,
                          attention_levels=config.attention_levels)
        if config.attributes:  # built last: every other weight is drawn as in an attribute-less model
            # row 0 ("not asked") is the padding row: it stays zero, so an attribute not asked adds nothing
            self.attribute_embeddings = nn.ModuleDict(
                {name: nn.Embedding(len(values) + 1, emb, padding_idx=0) for name, values in config.attributes})
            for embedding in self.attribute_embeddings.values():
                nn.init.zeros_(embedding.weight)
        if config.cell_shortcut:
            if s < 2:
                raise ValueError("a cell shortcut needs a space-to-depth stem of 2 or more")
            # set by the trainer (cell_shortcut_gains), then saved and exported with the weights; never trained
            self.register_buffer("cell_shortcut_gain", torch.zeros(config.cell_shortcut))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor,
                down_residuals: list[torch.Tensor] | None = None, mid_residual: torch.Tensor | None = None,
                attributes: torch.Tensor | None = None) -> torch.Tensor:
        """The v-prediction. ``down_residuals`` (one per skip, in order) and ``mid_residual`` are a ControlNet's
        additions (engine.models.compact_controlnet): added to the skips after the down path and to the mid output,
        as diffusers adds a ControlNet's residuals to its U-Net; None leaves the model as it was trained.
        ``attributes``: int64 (B, A), one index per config attribute (0 = not asked); None = none asked."""
        s = self.config.stem
        emb = self.time_mlp(timestep_embedding(timestep.reshape(-1).expand(sample.shape[0]), self.config.widths[0]))
        emb = emb + self.class_embedding(class_labels.reshape(-1).long())
        if attributes is not None and self.config.attributes:
            emb = emb + self.attribute_embedding(attributes)
        x = F.pixel_unshuffle(sample, s) if s > 1 else sample
        out = self._run_trunk(self.conv_in(x), emb, down_residuals, mid_residual)
        out = F.pixel_shuffle(out, s) if s > 1 else out
        if self.config.cell_shortcut:
            # The noisy image's detail inside each stem cell (what the trunk, seeing cells, reads only through the
            # stem) goes to the output times a gain per timestep: the v-prediction of that detail under a Gaussian
            # prior on real detail (cell_shortcut_gains). The trunk adds the rest; a stem-lifted 64² model thus
            # starts at its own result with grain of the real detail's strength, not at the stem's noise.
            noisy = sample[:, : self.config.image_channels]
            detail = noisy - F.interpolate(F.avg_pool2d(noisy, s), scale_factor=s, mode="nearest")
            index = timestep.reshape(-1).expand(sample.shape[0]).round().long().clamp(0, self.config.cell_shortcut - 1)
            out = out + self.cell_shortcut_gain[index].reshape(-1, 1, 1, 1) * detail
        return out

    def attribute_embedding(self, attributes: torch.Tensor) -> torch.Tensor:
        """The sum of the attribute embeddings of int (B, A) indices, (B, emb)."""
        names = self.config.attribute_names
        if attributes.ndim != 2 or attributes.shape[1] != len(names):
            raise ValueError(f"attributes must be (batch, {len(names)}) indices of {', '.join(names)}, "
                             f"got {tuple(attributes.shape)}")
        attributes = attributes.long()
        total = self.attribute_embeddings[names[0]](attributes[:, 0])
        for column, name in enumerate(names[1:], start=1):
            total = total + self.attribute_embeddings[name](attributes[:, column])
        return total


def lift_stem_weights(weights: dict[str, torch.Tensor], stem: int) -> dict[str, torch.Tensor]:
    """Weights of a stem-1 compact U-Net made into those of the same network with a space-to-depth stem of ``stem``,
    computing ``upsample_nearest(f(avg_pool(x)))`` where the stem-1 model computed ``f(x)``: its first convolution
    reads the mean of each cell's pixels (its kernel spread over the cell's channels, divided by the cell's size)
    and its last writes the same value to every pixel of a cell. A model trained at R² so starts a run at
    (stem·R)² from what it knew, its trunk still at R² (the receptive field over the view unchanged), and learns
    the finer detail from there. The other weights are returned as they are."""
    cell = stem * stem
    conv_in, conv_out = weights["conv_in.weight"], weights["conv_out.weight"]
    lifted = dict(weights)
    lifted["conv_in.weight"] = conv_in.repeat_interleave(cell, dim=1) / cell
    lifted["conv_out.weight"] = conv_out.repeat_interleave(cell, dim=0)
    lifted["conv_out.bias"] = weights["conv_out.bias"].repeat_interleave(cell, dim=0)
    return lifted


def cell_shortcut_gains(alphas_cumprod: torch.Tensor, detail_variance: float, stem: int) -> torch.Tensor:
    """Per timestep, the gain g with which v = α ε − σ x₀ is best predicted, inside a stem cell, from the noisy
    image's detail there (d = α d₀ + σ d_ε; a pixel minus its cell's mean), when the clean detail d₀ is Gaussian of
    variance ``detail_variance`` (measured on training crops) and the noise's is 1 − 1/stem²: the Wiener estimate
    d̂₀ = k d, k = α v₀ / (α² v₀ + σ² n), and v = (α x_t − x₀) / σ give g = (α − k) / σ. Bounded (of the
    order of 1 / √v₀ where σ² n ≈ v₀); near 0 at pure noise, 0 again as σ → 0."""
    a = alphas_cumprod.double()
    alpha, sigma = a.sqrt(), (1 - a).clamp_min(1e-12).sqrt()
    noise_variance = 1.0 - 1.0 / (stem * stem)
    k = alpha * detail_variance / (a * detail_variance + (1 - a) * noise_variance)
    return ((alpha - k) / sigma).float()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_compact_model(model: nn.Module, task_config, folder):
    """The torch original as a folder: config.json (architecture + training settings) + model.safetensors."""
    config = {"model_class": "CompactInpaintUNet", "model": model.config.to_json(), "task": task_config.to_json()}
    return write_model_folder(model, config, folder)


def load_compact_model(folder) -> tuple[CompactInpaintUNet, dict]:
    config = read_model_config(folder, "CompactInpaintUNet", "a compact model folder")
    return load_weights(CompactInpaintUNet(CompactConfig.from_json(config["model"])), folder), config
