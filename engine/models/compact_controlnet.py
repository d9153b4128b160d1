"""A CCIS-Diff ControlNet for the compact polyp model (engine.models.compact_unet.CompactInpaintUNet).

CCIS-Diff (Xie et al., arXiv 2411.12198) conditions a frozen diffusion model on a polyp mask and a clinical
caption through a ControlNet with blur-mask weighting and text-aware attention. engine.models.sd_controlnet is our
reading on an SD-1.5 base; this module is the same reading on the compact pixel-space base PolypForge trains
itself, which has no text encoder and no cross-attention of its own.

The model (``CompactControlledUNet``) is the frozen base plus ``CompactControlNet``:

* The trainable branch is a copy of the base's time/class embedding, stem (``conv_in``), down path and mid
  (initialised from the base's weights). Each of its skip outputs (the same list of tensors the base keeps for
  its up path) and its mid output go through a zero-initialised 1×1 convolution and are *added* to the base's
  skips and mid output (``CompactInpaintUNet.forward(..., down_residuals, mid_residual)``). At initialisation
  every residual is exactly 0, so the combined model is the base, bit for bit.
* Condition. The mask M is the input's mask channel (the compact model's input is [noisy, masked image, mask];
  at inference the mask is what the polyp is generated in). Em is a small conv encoder (3×3 convs, SiLU, the
  last one zero-initialised as in ControlNet) to the stem's width; with a space-to-depth stem, M is unshuffled
  the same way first. The condition added to the branch's stem output is
    - with blur-mask weighting: Em(M) + Mw ⊙ Em'(σ(M)), σ a fixed Gaussian blur inside the model (separable,
      ``blur_sigma`` px, radius ⌈3σ⌉, replicate padding), Em' a second encoder with its own weights, and
      Mw = sigmoid(MLP([Em(M), Em'(σ(M))])) with a per-pixel 3-layer MLP (three 1×1 convs, SiLU between);
    - without it (``--no-blur-weighting``): Em(M) (the σ, Em' and MLP modules do not exist).
* Text. A word vocabulary built from the training captions (engine.text.word_tokenizer: lowercase words,
  ``<pad>``, ``<unk>``, 32 tokens) feeds a learned token + position embedding and a small pre-norm transformer
  encoder (``text_layers`` × ``text_dim``; written with matmul/softmax, no padding mask: like SD's CLIP, padded
  positions are ordinary tokens). It is trainable and part of the ControlNet.
* In the branch, after each res block of the two lowest-resolution levels (``text_levels``), a ``TextBlock``:
  self-attention over pixels, then cross-attention from pixels to the text tokens (both residual, both output
  projections zero-initialised).
* Text-aware attention (``--no-text-attention`` removes it): before the self-attention, the per-pixel text
  relevance S is computed with the *cross*-attention's query projection applied to the self-attention's
  (normalised) input and its key projection of the text tokens: Mc = softmax over pixels of Q·Kᵀ/√d, per token
  and head (over tokens every pixel would sum to 1 and carry nothing); S = Σ_tokens Mc, averaged over heads,
  min-max normalised per image to [0, 1] (a constant map gives 0). The self-attention's keys are re-weighted by
  (1 + S): P'_jk ∝ softmax(Q_j·K_k/√d)·(1 + S_k) = softmax(Q_j·K_k/√d + log(1 + S_k)). Pixels that match the
  text weigh more as sources for every pixel; S constant gives back plain self-attention. No new weights.
  This is the reading engine.models.sd_controlnet documents for the SD variant.

Both additions are config switches (``blur_mask_weighting``, ``text_aware_attention``): whether their modules
exist. The class label (0 unconditional, 1 Polyp) goes to the base and to the branch's copy of the class
embedding; classifier-free guidance contrasts (class 0, empty caption) with (Polyp, the caption).

torch code (training and export only); the bundle runs on onnxruntime (engine.pipelines.compact_controlnet).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.folder import load_weights, read_model_config, write_model_folder
from engine.models.compact_unet import CompactConfig, CompactInpaintUNet, ResBlock, SelfAttention, timestep_embedding


@dataclass
class CompactControlNetConfig:
    vocab_size: int
    max_tokens: int = 32
    blur_mask_weighting: bool = True
    text_aware_attention: bool = True
    blur_sigma: float = 2.0  # pixels of the model's input (8 px at 512² in the SD reading; 2 px at the 64² crops)
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    attention_heads: int = 4
    condition_channels: int = 16  # hidden width of the mask encoders
    text_levels: tuple[int, ...] | None = None  # levels with a TextBlock; None: the two lowest resolutions

    def to_json(self) -> dict:
        values = asdict(self)
        values["text_levels"] = None if self.text_levels is None else list(self.text_levels)
        return values

    @classmethod
    def from_json(cls, data: dict) -> "CompactControlNetConfig":
        values = dict(data)
        if values.get("text_levels") is not None:
            values["text_levels"] = tuple(values["text_levels"])
        return cls(**values)

    def levels(self, count: int) -> tuple[int, ...]:
        return tuple(range(max(0, count - 2), count)) if self.text_levels is None else tuple(self.text_levels)


# ---------------------------------------------------------------------------------------------- pieces
class FixedGaussianBlur(nn.Module):
    """σ(M): a separable Gaussian blur with a fixed kernel (a non-persistent buffer: rebuilt from the config)."""

    def __init__(self, sigma: float):
        super().__init__()
        self.radius = max(1, math.ceil(3.0 * sigma))
        xs = torch.tensor([math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(-self.radius, self.radius + 1)])
        self.register_buffer("kernel", (xs / xs.sum()).float(), persistent=False)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W)
        r = self.radius
        out = F.conv2d(F.pad(mask, (r, r, 0, 0), mode="replicate"), self.kernel.view(1, 1, 1, -1))
        return F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), self.kernel.view(1, 1, -1, 1))


class MaskEncoder(nn.Module):
    """Em: mask (B, s², H/s, W/s) → (B, width, H/s, W/s); the last conv is zero-initialised (ControlNet)."""

    def __init__(self, in_channels: int, hidden: int, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.SiLU(),
                                  nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU())
        self.out = nn.Conv2d(hidden, width, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(mask))


class BlurMaskWeighting(nn.Module):
    """Mw = sigmoid(MLP([Em(M), Em'(σ(M))])) per pixel (three 1×1 convs); returns Mw ⊙ Em'(σ(M))."""

    def __init__(self, channels: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(2 * channels, channels, 1), nn.SiLU(), nn.Conv2d(channels, channels, 1),
                                 nn.SiLU(), nn.Conv2d(channels, channels, 1))

    def weights(self, mask_embedding: torch.Tensor, blur_embedding: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(torch.cat([mask_embedding, blur_embedding], dim=1)))

    def forward(self, mask_embedding: torch.Tensor, blur_embedding: torch.Tensor) -> torch.Tensor:
        return self.weights(mask_embedding, blur_embedding) * blur_embedding


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, C) → (B, heads, N, C / heads)."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    return torch.matmul(torch.softmax(logits, dim=-1), v)


class TextLayer(nn.Module):
    """A pre-norm transformer encoder layer (self-attention + GELU MLP), matmul/softmax only (exports anywhere)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = (_heads(t, self.heads) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        x = x + self.proj(_attend(q, k, v).transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Token ids (B, L) → text tokens (B, L, dim): token + position embedding, ``layers`` TextLayers, LayerNorm."""

    def __init__(self, vocab_size: int, max_tokens: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(1, max_tokens, dim))
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)
        self.layers = nn.ModuleList([TextLayer(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token(ids.long()) + self.position[:, : ids.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def text_relevance(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """S (B, hw) in [0, 1] from the cross-attention's pixel queries (B, heads, hw, d) and text keys (B, heads, L, d):
    softmax over pixels per token, summed over tokens, averaged over heads, min-max normalised per image."""
    logits = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.shape[-1])  # (B, heads, hw, L)
    scores = torch.softmax(logits, dim=-2).sum(dim=-1).mean(dim=1)  # (B, hw)
    low = scores.amin(dim=-1, keepdim=True)
    high = scores.amax(dim=-1, keepdim=True)
    return torch.clamp((scores - low) / (high - low + 1e-12), 0.0, 1.0)


class TextBlock(nn.Module):
    """Self-attention over pixels (keys re-weighted by 1 + S when text-aware) + cross-attention to the text."""

    def __init__(self, channels: int, text_dim: int, heads: int, groups: int, text_aware: bool):
        super().__init__()
        self.heads = heads
        self.text_aware = text_aware
        self.norm1 = nn.GroupNorm(min(groups, channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out1 = nn.Linear(channels, channels)
        self.norm2 = nn.GroupNorm(min(groups, channels), channels)
        self.to_q = nn.Linear(channels, channels)  # the cross-attention's projections (also give S)
        self.to_k = nn.Linear(text_dim, channels)
        self.to_v = nn.Linear(text_dim, channels)
        self.out2 = nn.Linear(channels, channels)
        for layer in (self.out1, self.out2):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _tokens(self, norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        return norm(x).flatten(2).transpose(1, 2)  # (B, hw, C)

    def relevance(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        pixels = self._tokens(self.norm1, x)
        return text_relevance(_heads(self.to_q(pixels), self.heads), _heads(self.to_k(text), self.heads))

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pixels = self._tokens(self.norm1, x)
        q, k, v = (_heads(t, self.heads) for t in self.qkv(pixels).chunk(3, dim=-1))
        bias = None
        if self.text_aware:
            s = text_relevance(_heads(self.to_q(pixels), self.heads), _heads(self.to_k(text), self.heads))
            bias = torch.log1p(s)[:, None, None, :]  # (B, 1, 1, hw): per key
        attended = _attend(q, k, v, bias).transpose(1, 2).reshape(b, h * w, c)
        x = x + self.out1(attended).transpose(1, 2).reshape(b, c, h, w)
        pixels = self._tokens(self.norm2, x)
        crossed = _attend(_heads(self.to_q(pixels), self.heads), _heads(self.to_k(text), self.heads),
                          _heads(self.to_v(text), self.heads)).transpose(1, 2).reshape(b, h * w, c)
        return x + self.out2(crossed).transpose(1, 2).reshape(b, c, h, w)


# ---------------------------------------------------------------------------------------------- the ControlNet
class CompactControlNet(nn.Module):
    """The trainable branch: (sample, timestep, class labels, text tokens) → (down residuals, mid residual)."""

    def __init__(self, base_config: CompactConfig, config: CompactControlNetConfig):
        super().__init__()
        self.base_config, self.config = base_config, config
        template = CompactInpaintUNet(base_config)  # the branch's layout; its weights are copied from the base
        widths, s = base_config.widths, base_config.stem
        self.time_mlp = template.time_mlp
        self.class_embedding = template.class_embedding
        self.conv_in = template.conv_in
        self.down = template.down
        self.mid = template.mid
        self.mask_encoder = MaskEncoder(s * s, config.condition_channels, widths[0])
        if config.blur_mask_weighting:
            self.blur = FixedGaussianBlur(config.blur_sigma)
            self.blur_encoder = MaskEncoder(s * s, config.condition_channels, widths[0])
            self.blur_weighting = BlurMaskWeighting(widths[0])
        self.text_encoder = TextEncoder(config.vocab_size, config.max_tokens, config.text_dim, config.text_layers,
                                        config.text_heads)
        text_levels = set(config.levels(len(widths)))
        self.text_blocks = nn.ModuleDict()
        skip_channels = [widths[0]]
        for level, blocks in enumerate(self.down):
            for index, block in enumerate(blocks):
                if isinstance(block, ResBlock):
                    if level in text_levels:
                        self.text_blocks[f"{level}_{index}"] = TextBlock(
                            widths[level], config.text_dim, config.attention_heads, base_config.groups,
                            config.text_aware_attention)
                    skip_channels.append(widths[level])
                elif not isinstance(block, SelfAttention):
                    skip_channels.append(widths[level])
        self.zero_convs = nn.ModuleList([nn.Conv2d(c, c, 1) for c in skip_channels])
        self.mid_zero_conv = nn.Conv2d(widths[-1], widths[-1], 1)
        for conv in [*self.zero_convs, self.mid_zero_conv]:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    @classmethod
    def from_base(cls, base: CompactInpaintUNet, config: CompactControlNetConfig) -> "CompactControlNet":
        model = cls(base.config, config)
        for name in ("time_mlp", "class_embedding", "conv_in", "down", "mid"):
            getattr(model, name).load_state_dict(copy.deepcopy(getattr(base, name).state_dict()))
        return model

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(ids)

    def condition(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask condition added to the stem output: Em(M) (+ Mw ⊙ Em'(σ(M)) with blur-mask weighting)."""
        s = self.base_config.stem
        shuffle = (lambda m: F.pixel_unshuffle(m, s)) if s > 1 else (lambda m: m)
        embedding = self.mask_encoder(shuffle(mask))
        if self.config.blur_mask_weighting:
            embedding = embedding + self.blur_weighting(embedding, self.blur_encoder(shuffle(self.blur(mask))))
        return embedding

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor,
                text: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``text``: the text encoder's tokens (B, L, text_dim) (``encode_text`` of the ids)."""
        s = self.base_config.stem
        channels = self.base_config.image_channels
        emb = self.time_mlp(timestep_embedding(timestep.reshape(-1).expand(sample.shape[0]), self.base_config.widths[0]))
        emb = emb + self.class_embedding(class_labels.reshape(-1).long())
        mask = sample[:, 2 * channels: 2 * channels + 1]
        x = F.pixel_unshuffle(sample, s) if s > 1 else sample
        h = self.conv_in(x) + self.condition(mask)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for index, block in enumerate(blocks):
                if isinstance(block, SelfAttention):
                    h = skips[-1] = block(h)
                elif isinstance(block, ResBlock):
                    h = block(h, emb)
                    text_block = self.text_blocks[f"{level}_{index}"] if f"{level}_{index}" in self.text_blocks else None
                    if text_block is not None:
                        h = text_block(h, text)
                    skips.append(h)
                else:
                    h = block(h)
                    skips.append(h)
        for block in self.mid:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)
        return [conv(skip) for conv, skip in zip(self.zero_convs, skips)], self.mid_zero_conv(h)

    def text_maps(self, sample, timestep, class_labels, text) -> list[torch.Tensor]:
        """S (B, h·w) of each TextBlock, in order (for inspection and tests)."""
        maps = []
        hooks = [block.register_forward_pre_hook(lambda m, args: maps.append(m.relevance(*args)))
                 for block in self.text_blocks.values()]
        try:
            with torch.no_grad():
                self.forward(sample, timestep, class_labels, text)
        finally:
            for hook in hooks:
                hook.remove()
        return maps


class CompactControlledUNet(nn.Module):
    """The frozen base + the ControlNet: what the trainer trains (only ``controlnet``'s parameters)."""

    def __init__(self, base: CompactInpaintUNet, controlnet: CompactControlNet):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.controlnet = controlnet

    @property
    def config(self) -> CompactConfig:
        return self.base.config

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor,
                token_ids: torch.Tensor) -> torch.Tensor:
        text = self.controlnet.encode_text(token_ids)
        down, mid = self.controlnet(sample, timestep, class_labels, text)
        return self.base(sample, timestep, class_labels, down, mid)


# ---------------------------------------------------------------------------------------------- the folder
MODEL_CLASS = "CompactCCISControlNet"
VOCAB_NAME = "vocab.json"


def save_controlled_model(model: CompactControlledUNet, tokenizer, task_config, folder):
    """The torch original as a folder: config.json (base + ControlNet architecture, training settings),
    model.safetensors (base.* and controlnet.*: the folder stands alone) and vocab.json."""
    config = {"model_class": MODEL_CLASS, "base": model.base.config.to_json(),
              "controlnet": model.controlnet.config.to_json(), "task": task_config.to_json()}
    return write_model_folder(model, config, folder, extra_files={VOCAB_NAME: tokenizer.to_bytes()})


def load_controlled_model(folder):
    """(model, tokenizer, config dict) of a folder ``save_controlled_model`` wrote."""
    from pathlib import Path

    from engine.text.word_tokenizer import WordTokenizer

    config = read_model_config(folder, MODEL_CLASS, "a compact CCIS ControlNet folder")
    base_config = CompactConfig.from_json(config["base"])
    model = CompactControlledUNet(CompactInpaintUNet(base_config),
                                  CompactControlNet(base_config, CompactControlNetConfig.from_json(config["controlnet"])))
    return load_weights(model, folder), WordTokenizer.from_file(Path(folder) / VOCAB_NAME), config
