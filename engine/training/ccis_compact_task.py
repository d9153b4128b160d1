"""Training a compact CCIS ControlNet (``main.py train --method ccis --preset compact --init-from BASE``) on the
one trainer: CCIS-Diff's mask + clinical-text ControlNet (engine.models.compact_controlnet) on the compact polyp
model PolypForge trained itself, which stays frozen.

The data path is the compact task's (engine.training.compact_task) restricted to what CCIS-Diff learns from:
Polyp pairs only (a polyp frame, one of its polyps, a crop around its box widened by 15–50 %, resized to
``resolution``², rotated/flipped at random), the polyp's own mask (``mask_mode`` "pixel"; a tenth of the pairs
take its box, as masks at inference often are boxes) and the frame's caption from ``main.py caption``. The
caption is replaced by "" for ``text_dropout`` (50 %) of the samples and, independently, the class label by the
unconditional class for ``unconditional_fraction`` (10 %, as the base was trained), so all four (class, caption)
pairings classifier-free guidance uses at sampling ((0, "") against (Polyp, caption)) are trained. The objective
is the base's: v-prediction on its cosine schedule, min-SNR-γ, the loss focused inside the mask plus the
lesion-guided term. Data and noise come from the trainer's per-step generators, so ``--resume`` is exact.

The vocabulary is built from the training frames' captions (held-out frames' words it lacks become ``<unk>``)
and saved with the model. At the end the model folder (base + ControlNet + vocab.json) is written and, with
``--to``, exported as a "pixel-controlnet" bundle (engine.export.compact_controlnet_export).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.errors import InputError
from engine.text.word_tokenizer import MAX_LENGTH, WordTokenizer
from engine.models.compact_unet import CompactConfig, CompactInpaintUNet, parameter_count
from engine.training.compact_task import (
    POLYP,
    SCHEDULER_CONFIG,
    UNCONDITIONAL,
    CompactInpaintTask,
    CompactTaskConfig,
    _crop_resized,
    _polygon_in_crop,
    initial_weights,
)
from engine.training.captions import contrasting_caption, frame_captions
from engine.training.corpus import Corpus
from engine.training.task import TrainConfig
from engine.training.objectives import add_noise, inpainting_loss, min_snr_weight, target_of
from engine.training.recipe import CCIS_COMPACT_DEFAULTS, ModelOutput, TaskEntry, generator_config, pick


@dataclass
class CCISCompactTaskConfig(CompactTaskConfig):
    resolution: int = 64
    model: CompactConfig = field(default_factory=lambda: CompactConfig(widths=(32, 64, 128), stem=1))  # the base's
    batch_size: int = 16
    polyp_fraction: float = 1.0  # Polyp pairs only: a caption describes a polyp
    mask_mode: str = "pixel"
    box_mask_fraction: float = 0.1
    scheduler: dict = field(default_factory=lambda: dict(SCHEDULER_CONFIG))
    sample_guidance: float = 3.0
    captions: str = ""
    text_dropout: float = 0.5
    allow_uncaptioned: bool = False
    blur_mask_weighting: bool = True
    text_aware_attention: bool = True
    blur_sigma: float | None = None  # pixels at ``resolution``; None: resolution / 32 (2 px at 64²)
    text_dim: int = 64
    text_layers: int = 2
    max_tokens: int = MAX_LENGTH

    def sigma(self) -> float:
        return self.resolution / 32.0 if self.blur_sigma is None else float(self.blur_sigma)

    def to_json(self) -> dict:
        return {**super().to_json(), "blur_sigma": self.sigma()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


class CCISCompactTask(CompactInpaintTask):
    noise_on_device = False  # its loss draws on a CPU generator
    name = "ccis-compact-controlnet"

    def __init__(self, corpus: Corpus, config: CCISCompactTaskConfig, grid_rows: int = 4):
        if not config.init_from:
            raise InputError("--method ccis --preset compact trains on a compact base: give --init-from MODEL_DIR "
                             "(e.g. training_runs/compact-anneal/model)")
        if not 0.0 <= config.text_dropout <= 1.0:
            raise InputError(f"text dropout {config.text_dropout}: must be between 0 and 1")
        super().__init__(corpus, config, grid_rows=grid_rows)
        self.config: CCISCompactTaskConfig = config
        if not self.polyp_frames:
            raise InputError("no training frame with a polyp mask: a CCIS ControlNet learns from frames + masks")
        self.captions = frame_captions(corpus, Path(config.captions), config.allow_uncaptioned)
        self.uncaptioned = sum(1 for text in self.captions.values() if not text)
        self.tokenizer = WordTokenizer.from_texts([self.captions[f.rel] for f in self.polyp_frames], config.max_tokens)
        self._base_weights = initial_weights(Path(config.init_from))

    # ------------------------------------------------------------------ what the run is
    def describe(self) -> dict:
        described = super().describe()
        base_sha = _sha(b"".join(k.encode() + v.numpy().tobytes() for k, v in sorted(self._base_weights.items())))
        described["base"] = {"weights_sha": base_sha}
        described["captions"] = {"file": str(Path(self.config.captions).resolve()), "frames": len(self.captions),
                                 "uncaptioned": self.uncaptioned, "vocabulary": self.tokenizer.size,
                                 "vocabulary_sha": _sha(self.tokenizer.to_bytes())}
        return described

    def provenance(self) -> dict:
        return {"base": self.config.init_from}

    def initial_state(self):
        return None  # build_model starts from the base (copied into the branch); the new modules from the seed

    def controlnet_config(self):
        from engine.models.compact_controlnet import CompactControlNetConfig

        c = self.config
        return CompactControlNetConfig(vocab_size=self.tokenizer.size, max_tokens=c.max_tokens,
                                       blur_mask_weighting=c.blur_mask_weighting,
                                       text_aware_attention=c.text_aware_attention, blur_sigma=c.sigma(),
                                       text_dim=c.text_dim, text_layers=c.text_layers)

    def build_model(self) -> torch.nn.Module:
        from engine.models.compact_controlnet import CompactControlledUNet, CompactControlNet

        base = CompactInpaintUNet(self.config.model)
        base.load_state_dict(self._base_weights)
        return CompactControlledUNet(base.eval(), CompactControlNet.from_base(base, self.controlnet_config()))

    def trainable_parameters(self, model):
        return [p for p in model.controlnet.parameters() if p.requires_grad]

    def summary(self, model) -> dict:
        return {"parameters": parameter_count(model.controlnet), "base_parameters": parameter_count(model.base)}

    # ------------------------------------------------------------------ data
    def make_raw_batch(self, step: int, rng: np.random.Generator) -> dict:
        return self.make_batch(step, rng)  # its batch is built whole (tensors) in the worker

    def collate(self, raw: dict) -> dict:
        return raw

    def make_batch(self, step: int, rng: np.random.Generator) -> dict:
        return self._controlled_batch(rng, self.polyp_frames, drop=True)

    def _controlled_batch(self, rng, frames, drop: bool) -> dict:
        size, count = self.config.resolution, self.config.batch_size
        images = np.empty((count, size, size, 3), np.uint8)
        masks = np.empty((count, size, size), bool)
        labels = np.empty(count, np.int64)
        texts = []
        for i in range(count):
            frame = frames[int(rng.integers(len(frames)))]
            image, mask, label, _ = self._polyp_pair_on(frame, rng)
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            image, mask = np.rot90(image, turns), np.rot90(mask, turns)
            if flip:
                image, mask = image[:, ::-1], mask[:, ::-1]
            images[i], masks[i] = image, mask
            text_dropped = rng.random() < self.config.text_dropout
            class_dropped = rng.random() < self.config.unconditional_fraction
            labels[i] = UNCONDITIONAL if drop and class_dropped else label
            texts.append("" if drop and text_dropped else self.captions.get(frame.rel, ""))
        x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return {"x0": x0, "mask": torch.from_numpy(masks)[:, None].float(), "labels": torch.from_numpy(labels),
                "tokens": torch.from_numpy(self.tokenizer(texts))}

    def _fixed_batch(self) -> dict:
        if not hasattr(self, "_fixed"):
            held = [f for f in self.corpus.held_out if f.has_polyp and f.rel in self.captions] or self.polyp_frames
            self._fixed = self._controlled_batch(np.random.default_rng(4321), sorted(held, key=lambda f: f.stem),
                                                 drop=False)
        return self._fixed

    # ------------------------------------------------------------------ objective
    def loss(self, model, batch, generator):
        x0, mask, labels, tokens = batch["x0"], batch["mask"], batch["labels"], batch["tokens"]
        count = x0.shape[0]
        t = torch.randint(0, len(self.alphas_cumprod), (count,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        noisy = add_noise(x0, noise, self.alphas_cumprod, t)
        model_input = torch.cat([noisy, x0 * (1 - mask), mask], dim=1)
        prediction = model(model_input, t.float().to(x0.device), labels, tokens)
        prediction_type = self.config.scheduler["prediction_type"]
        target = target_of(prediction_type, x0, noise, self.alphas_cumprod, t)
        weight = min_snr_weight(prediction_type, self.alphas_cumprod, t, self.config.min_snr_gamma)
        return inpainting_loss(prediction, target, mask, self.config.lg_weight, self.config.outside_weight, weight)

    # ------------------------------------------------------------------ the sample grid
    def grid_rows_data(self):
        """Held-out polyp frames (else training ones): the crop the engine would take around the first polyp,
        its own mask, its caption and the contrasting caption ("pale" ↔ "red", "small" ↔ "large")."""
        if hasattr(self, "_grid"):
            return self._grid
        held = sorted((f for f in self.corpus.held_out if f.has_polyp), key=lambda f: f.stem) or \
            sorted(self.polyp_frames, key=lambda f: f.stem)
        size = self.config.resolution
        rows = []
        for frame in held[: self.grid_rows]:
            box = frame.boxes[0]
            crop = self._inference_crop(frame, box)
            if frame.instance_masks[0] is not None:
                full = frame.instance_masks[0].astype(np.uint8) * 255
                mask = _crop_resized(full, crop, size, Image.Resampling.NEAREST) > 127
            else:
                x0, y0, x1, y1 = box
                mask = _polygon_in_crop(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float), crop, size)
            caption = self.captions.get(frame.rel, "")
            rows.append((_crop_resized(frame.image, crop, size, Image.Resampling.BILINEAR), mask, caption,
                         contrasting_caption(caption), frame.stem))
        self._grid = rows
        return rows

    def sample_grid(self, model, step: int, path: Path) -> None:
        from engine.fileio import atomic_write_bytes
        from engine.training.plots import image_grid

        rows = self.grid_rows_data()
        if not rows:
            return
        images = torch.from_numpy(np.stack([r[0] for r in rows])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        masks = torch.from_numpy(np.stack([r[1] for r in rows]))[:, None].float()
        classes = torch.full((len(rows),), POLYP)
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
        columns = []
        for texts in ([r[2] for r in rows], [r[3] for r in rows]):
            out = sample_controlled(model, images, masks, classes, torch.from_numpy(self.tokenizer(texts)),
                                    torch.from_numpy(self.tokenizer([""] * len(rows))), noise, self.config.scheduler,
                                    self.config.sample_steps, self.config.sample_guidance)
            composite = out * masks + images * (1 - masks)
            columns.append(((composite.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
        grid_rows, labels = [], []
        for i, (image, mask, caption, contrast, stem) in enumerate(rows):
            masked = image.copy()
            masked[mask] = 128
            grid_rows.append([image, masked, columns[0][i], columns[1][i]])
            changed = [f"{a}>{b}" for a, b in zip(caption.replace(",", " ").split(), contrast.replace(",", " ").split())
                       if a != b]
            labels.append(f"{stem[:10]} {' '.join(changed)[:14]}")
        picture = image_grid(grid_rows, labels, tile=max(64, self.config.resolution),
                             header=["source", "mask", "its caption", "contrasting caption"])
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())


def sample_controlled(model, images: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor, tokens: torch.Tensor,
                      uncond_tokens: torch.Tensor, noise: torch.Tensor, scheduler_config: dict, steps: int,
                      guidance: float) -> torch.Tensor:
    """The torch original of the engine's pixel-controlnet sampler: diffusers' DDIM on the v-prediction of base +
    ControlNet, classifier-free guidance of (class 0, ``uncond_tokens``) against (``classes``, ``tokens``) as one
    batch, unconditional half first: the compact model's sampler with the text as the model's extra input."""
    from engine.training.compact_task import sample_inpaint

    return sample_inpaint(model, images, masks, classes, noise, scheduler_config, steps, guidance, tokens=tokens,
                          uncond_tokens=uncond_tokens)


def build(options, corpus: Corpus) -> tuple[CCISCompactTask, TrainConfig]:
    """The task and trainer settings of ``main.py train --method ccis --preset compact``: the architecture,
    scheduler and resolution come from the --init-from base, the rest from the options or CCIS_COMPACT_DEFAULTS."""
    from engine.models.compact_unet import load_compact_model

    if options.captions is None:
        raise InputError("--method ccis needs --captions FILE (write one with `main.py caption --input FRAMES "
                         "--masks MASKS --out captions.csv`)")
    if options.init_from is None:
        raise InputError("--method ccis --preset compact trains on a compact base: give --init-from MODEL_DIR "
                         "(e.g. training_runs/compact-anneal/model)")
    given = [flag for flag, name in (("--widths", "widths"), ("--blocks", "blocks"), ("--stem", "stem"),
                                     ("--attention-levels", "attention_levels")) if getattr(options, name, None) is not None]
    if given:
        raise InputError(f"{', '.join(given)}: the compact CCIS ControlNet takes its architecture from the base "
                         f"({options.init_from})")
    if getattr(options, "controlnet_from", None) is not None:
        raise InputError("--controlnet-from continues an SD-1.5 ControlNet; a compact CCIS run continues with --resume")
    base, base_config = load_compact_model(Path(options.init_from))
    base_task = base_config.get("task", {})
    resolution = int(base_task.get("resolution", CCIS_COMPACT_DEFAULTS["resolution"]))
    defaults = {**CCIS_COMPACT_DEFAULTS, "resolution": resolution}
    plain = CCISCompactTaskConfig()
    gamma = plain.min_snr_gamma if options.min_snr_gamma is None else (options.min_snr_gamma or None)
    task_config = CCISCompactTaskConfig(
        resolution=pick(options, "resolution", defaults), model=base.config,
        batch_size=pick(options, "batch_size", defaults),
        mask_mode=options.mask_mode or plain.mask_mode, lg_weight=options.lg_weight,
        outside_weight=plain.outside_weight if options.outside_weight is None else options.outside_weight,
        min_snr_gamma=gamma,
        box_mask_fraction=plain.box_mask_fraction if options.box_mask_fraction is None else options.box_mask_fraction,
        scheduler=dict(base_task.get("scheduler", SCHEDULER_CONFIG)), sample_steps=options.sample_steps,
        init_from=str(Path(options.init_from).resolve()), captions=str(Path(options.captions).resolve()),
        text_dropout=options.text_dropout, allow_uncaptioned=options.allow_uncaptioned,
        blur_mask_weighting=not options.no_blur_weighting, text_aware_attention=not options.no_text_attention,
        blur_sigma=options.blur_sigma,
    )
    return CCISCompactTask(corpus, task_config), generator_config(options, defaults)


def output(task: CCISCompactTask) -> ModelOutput:
    """The model folder (base + ControlNet + vocab.json) and a "pixel-controlnet" bundle; the card adds the
    captions, the base and the ablation switches."""

    def write(model, folder: Path) -> Path:
        from engine.models.compact_controlnet import save_controlled_model

        return save_controlled_model(model, task.tokenizer, task.config, folder)

    def export(folder: Path, bundle: Path, name: str | None, card: Path) -> Path:
        from engine.export.compact_controlnet_export import export_compact_controlnet_bundle

        return export_compact_controlnet_bundle(folder, bundle, name=name, card=card)

    figures = {"captions": task.describe()["captions"], "base": task.config.init_from,
               "ablation": {"blur_mask_weighting": task.config.blur_mask_weighting,
                            "text_aware_attention": task.config.text_aware_attention}}
    return ModelOutput("controlnet", "ControlNet folder", write, export, figures)


ENTRY = TaskEntry(build, output)
