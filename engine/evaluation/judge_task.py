"""The judge as a TrainingTask of the one trainer (engine.training.loop).

Batches: ``batch_size`` frames drawn with replacement from the training set by the step's generator, each
augmented (engine.evaluation.segdata.augment) to ``size`` × ``size``. Loss: binary cross-entropy + soft Dice
(1 − 2Σpy / (Σp + Σy), over the batch), the usual pair for polyp segmentation (BCE for per-pixel calibration,
Dice against the foreground/background imbalance). Validation: per-frame Dice and IoU of (p > 0.5) with the
held-out masks at the training size, averaged (val_dice, val_iou) — the early-stopping metric is val_dice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from engine.judge import scores
from engine.judge.preprocess import IMAGE_MEAN, IMAGE_STD, normalise
from engine.evaluation.segdata import SegmentationSet, augment, at_size
from engine.models.segmenter import DEFAULT_WIDTHS, JudgeNet
from engine.training.task import TrainingTask

DEFAULT_SIZE = 128
DEFAULT_BATCH = 8
VALIDATION_BATCH = 16
GRID_FRAMES = 8


class JudgeTask(TrainingTask):
    name = "judge"

    def __init__(self, train_set: SegmentationSet, val_set: SegmentationSet, size: int = DEFAULT_SIZE,
                 batch_size: int = DEFAULT_BATCH, widths: tuple[int, ...] = DEFAULT_WIDTHS,
                 description: dict | None = None, on_step: Callable[[], None] | None = None):
        """``on_step``: called before each step's batch is drawn (``evaluate``'s progress and cancel)."""
        step = 2 ** (len(widths) - 1)
        if size % step:
            raise ValueError(f"size {size} must be a multiple of {step} for {len(widths)} widths")
        self.train_set, self.val_set = train_set, val_set
        self.size, self.batch_size, self.widths = int(size), int(batch_size), tuple(int(w) for w in widths)
        self.extra = dict(description or {})
        self.on_step = on_step
        self._val = at_size(val_set, self.size) if len(val_set) else None

    def describe(self) -> dict:
        return {"size": self.size, "batch_size": self.batch_size, "widths": list(self.widths),
                "train_frames": len(self.train_set), "train_digest": self.train_set.digest(),
                "val_frames": len(self.val_set), "val_digest": self.val_set.digest(),
                "cache": int(self.train_set.images.shape[1]), "loss": "bce + soft dice",
                "image_mean": list(IMAGE_MEAN), "image_std": list(IMAGE_STD), **self.extra}

    def build_model(self) -> JudgeNet:
        return JudgeNet(self.widths)

    def samples_per_step(self) -> int:
        return self.batch_size

    def make_batch(self, step: int, rng: np.random.Generator) -> dict:
        if self.on_step is not None:
            self.on_step()
        picks = rng.integers(0, len(self.train_set), self.batch_size)
        images, masks = [], []
        for index in picks:
            image, mask = augment(self.train_set.images[index], self.train_set.masks[index], rng, self.size)
            images.append(image)
            masks.append(mask)
        return {"pixels": torch.from_numpy(normalise(np.stack(images))),
                "mask": torch.from_numpy(np.stack(masks)[:, None])}

    def loss(self, model, batch, generator):
        logits = model(batch["pixels"])
        target = batch["mask"]
        bce = F.binary_cross_entropy_with_logits(logits, target)
        p = torch.sigmoid(logits)
        soft_dice = 1.0 - (2.0 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
        return bce + soft_dice, {"bce": float(bce.detach()), "soft_dice_loss": float(soft_dice.detach())}

    @torch.no_grad()
    def predict(self, model, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, size, size) of uint8 (N, size, size, 3) images, in eval mode."""
        was_training = model.training
        model.eval()
        out = []
        for start in range(0, len(images), VALIDATION_BATCH):
            x = torch.from_numpy(normalise(images[start:start + VALIDATION_BATCH]))
            out.append(torch.sigmoid(model(x))[:, 0].numpy())
        model.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.size, self.size), np.float32)

    def validate(self, model) -> dict[str, float]:
        if self._val is None:
            return {}
        images, masks = self._val
        probabilities = self.predict(model, images)
        dice = [scores.dice(p > 0.5, m) for p, m in zip(probabilities, masks)]
        iou = [scores.iou(p > 0.5, m) for p, m in zip(probabilities, masks)]
        return {"val_dice": float(np.mean(dice)), "val_iou": float(np.mean(iou))}

    def sample_grid(self, model, step: int, path: Path) -> None:
        if self._val is None:
            return
        from engine.evaluation.pictures import overlay_grid

        images, masks = self._val
        count = min(GRID_FRAMES, len(images))
        probabilities = self.predict(model, images[:count])
        overlay_grid(images[:count], masks[:count], probabilities, path, title=f"judge, step {step}")
