"""The judge's network: a compact U-Net for binary polyp segmentation, in PyTorch (training and export only).

``JudgeNet(widths=(16, 32, 64, 128, 256))``: four encoder levels and a bottleneck, each two 3×3 conv +
BatchNorm + ReLU, 2×2 max-pooling between levels; the decoder upsamples bilinearly, concatenates the skip
connection and applies two conv blocks; a 1×1 conv gives one logit per pixel. ~1.9 M parameters with the
default widths. The input side must be a multiple of 2^(levels − 1) (16 by default).

``forward(x)`` returns the logits (B, 1, S, S). ``embed(x)`` returns the encoder's global feature: the
bottleneck activations averaged over space (B, widths[-1]) — what ``--features judge`` measures distances on.
``Exported`` wraps both for ONNX: pixel_values → (probability (B, 1, S, S), embedding (B, D)).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_WIDTHS = (16, 32, 64, 128, 256)


class ConvBlock(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True),
        )


class JudgeNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS):
        super().__init__()
        if len(widths) < 2:
            raise ValueError("JudgeNet needs at least two widths (one level and the bottleneck)")
        self.widths = tuple(int(w) for w in widths)
        self.down = nn.ModuleList()
        channels = 3
        for width in self.widths:
            self.down.append(ConvBlock(channels, width))
            channels = width
        self.up = nn.ModuleList()
        for skip in reversed(self.widths[:-1]):
            self.up.append(ConvBlock(channels + skip, skip))
            channels = skip
        self.head = nn.Conv2d(channels, 1, 1)

    @property
    def size_step(self) -> int:
        return 2 ** (len(self.widths) - 1)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for index, block in enumerate(self.down):
            if index:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        return x, skips[:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self._encode(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        bottleneck, _ = self._encode(x)
        return bottleneck.mean(dim=(2, 3))

    def logits_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding, _ = self.logits_embedding_patches(x)
        return logits, embedding

    def logits_embedding_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, the global embedding, and the patch features: the deepest encoder level above the bottleneck
        (B, widths[-2], S / 2^(levels − 2), same) — a patch grid for the retrieval proposer (16 × 16 × 128 at
        128² with the default widths)."""
        bottleneck, skips = self._encode(x)
        y = bottleneck
        for block, skip in zip(self.up, reversed(skips)):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return self.head(y), bottleneck.mean(dim=(2, 3)), skips[-1]

    def patch_grid(self, size: int) -> tuple[int, int]:
        """(side of the patch grid, patch size in input pixels) at input side ``size``."""
        stride = 2 ** (len(self.widths) - 2)
        return size // stride, stride


class Exported(nn.Module):
    """What the ONNX file computes: normalised pixels → (polyp probability per pixel, encoder embedding, patch
    features)."""

    def __init__(self, net: JudgeNet):
        super().__init__()
        self.net = net

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, embedding, patches = self.net.logits_embedding_patches(pixel_values)
        return torch.sigmoid(logits), embedding, patches


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
