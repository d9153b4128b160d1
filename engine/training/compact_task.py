"""Training the compact polyp model (``main.py train --preset compact``): Polyp-Gen's spatial-aware pairs on crops
around the region, in pixel space, with the objective that makes a small model converge on a CPU.

A training sample is what the engine will see at inference in region mode (engine.pipelines.framing): the box
of the region (a polyp's box for "Polyp", a free box of polyp-like size for "Normal") widened by a random padding
of 15–50 % of its longer side (the engine's automatic padding, 30 %, lies in the middle), cropped square, resized
to ``resolution``², flipped / rotated by 90° at random. The mask is the pair's mask (BPM polygon, pixel mask or box
for "Polyp"; a convex polygon in the free box for "Normal"). The objective is v-prediction on a cosine schedule
with min-SNR-γ weighting, the loss focused inside the mask (outside weight 0.1) plus the lesion-guided term;
10 % of labels are dropped to the unconditional class for classifier-free guidance. These choices come from the
probes in TRAINING.md (ε-prediction with plain MSE still painted noise after 25 minutes; v + min-SNR + the
masked loss painted lesion-like tissue after 22).

With ``attributes`` on (``--attributes``), the model also learns the clinical attributes the captioner measures
(colour, surface, size, outline, elevation: engine.captioning.conditioning): each Polyp pair is given its polyp's
(engine.training.attribute_captions, cached in the run folder), each attribute dropped to "not asked" with
probability ``attribute_dropout`` (0.3) on its own and all of them with the label when the label is dropped;
Normal pairs get none. Off (the default), the task is what it always was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.captioning.conditioning import MODEL_ATTRIBUTES
from engine.pipelines.attribute_inputs import attribute_indices
from engine.pipelines.framing import auto_region_padding, region_crop
from engine.models.compact_unet import (
    CLASS_NAMES,
    CompactConfig,
    CompactInpaintUNet,
    lift_stem_weights,
    parameter_count,
)
from engine.schedulers.common import shifted_cosine_betas
from engine.training.attribute_captions import CACHE_NAME as ATTRIBUTE_CACHE
from engine.training.corpus import Corpus, CorpusFrame
from engine.training.task import TrainConfig, TrainingError, TrainingTask
from engine.training.objectives import (
    add_noise,
    alphas_cumprod_of,
    inpainting_loss,
    min_snr_weight,
    target_of,
)
from engine.training.pairs import (
    convex_polygon_in_box,
    NORMAL_SIZE_RANGE,
    dark_area,
    normal_region_box,
    polyp_training_mask,
    visible_area,
)
from engine.training.recipe import COMPACT_DEFAULTS, ModelOutput, TaskEntry, generator_config, pick

POLYP, NORMAL, UNCONDITIONAL = CLASS_NAMES.index("Polyp"), CLASS_NAMES.index("Normal"), 0

SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": False,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
}


@dataclass
class CompactTaskConfig:
    resolution: int = 128
    model: CompactConfig = field(default_factory=lambda: CompactConfig(widths=(48, 96, 192), blocks=1, stem=2,
                                                                       attention_levels=(2,)))
    batch_size: int = 16
    polyp_fraction: float = 0.7  # share of "Polyp" pairs; the rest are "Normal"
    mask_mode: str = "bpm"
    lg_weight: float = 0.5
    outside_weight: float = 0.1
    min_snr_gamma: float | None = 5.0
    unconditional_fraction: float = 0.1
    padding_range: tuple[float, float] = (0.15, 0.5)
    scheduler: dict = field(default_factory=lambda: dict(SCHEDULER_CONFIG))
    sample_steps: int = 20
    sample_guidance: float = 2.0
    # Share of pairs (both prompts) whose mask is the region's box instead of a polygon: at inference the
    # mask is often a box (mask source box, Polyp-Gen's 15-px box for removal); a model trained from scratch
    # only on polygons paints artefacts into boxes.
    box_mask_fraction: float = 0.25
    init_from: str | None = None  # start from these weights (a run folder's newest checkpoint or a model folder)
    # Attribute conditioning (model.attributes holds which); each attribute of a Polyp pair is dropped to "not
    # asked" with this probability on its own
    attributes: bool = False
    attribute_dropout: float = 0.3
    # With attributes: polyps whose colour, surface or elevation is rare are drawn more often, so that each value
    # makes up at least about this share of the Polyp pairs (engine.training.attribute_balance); None: as found
    rare_attribute_floor: float | None = None
    # The attribute embeddings' learning rate as a multiple of the schedule's, without weight decay: zero-initialised
    # beside a class embedding of norm ~10, at the schedule's rate they stay near zero (norm 0.1-0.3 after 2,000 steps)
    attribute_lr_scale: float = 1.0
    # Normal regions: their side as a fraction of the frame's shorter side, and the most lumen (dark pixels) a
    # region may hold (None: any). Wider and lumen-free teaches large removals to fill with mucosa.
    normal_size_range: tuple[float, float] = NORMAL_SIZE_RANGE
    normal_max_dark: float | None = None
    # The cosine schedule's log-SNR moved down by 2 ln(shift) (engine.schedulers.common.shifted_cosine_betas): a
    # run at twice the resolution the schedule was made for uses 2. Written into ``scheduler`` as trained_betas,
    # which the sampler and the exported bundle read; kept here too so the card says what they are.
    schedule_shift: float = 1.0

    def to_json(self) -> dict:
        values = asdict(self)
        values["model"] = self.model.to_json()
        values["padding_range"] = list(self.padding_range)
        if not self.attributes:  # as written before attributes existed: earlier runs still resume
            values.pop("attributes")
            values.pop("attribute_dropout")
        if self.rare_attribute_floor is None:  # as written before it existed: earlier runs still resume
            values.pop("rare_attribute_floor")
        if self.attribute_lr_scale == 1.0:  # likewise
            values.pop("attribute_lr_scale")
        if tuple(self.normal_size_range) == NORMAL_SIZE_RANGE and self.normal_max_dark is None:
            values.pop("normal_size_range")  # as written before these existed: earlier runs still resume
            values.pop("normal_max_dark")
        else:
            values["normal_size_range"] = list(self.normal_size_range)
        if self.schedule_shift == 1.0:
            values.pop("schedule_shift")  # as written before it existed: earlier runs still resume
        return values


def _crop_resized(image: np.ndarray, crop: tuple[int, int, int, int], size: int, resample) -> np.ndarray:
    x0, y0, x1, y1 = crop
    return np.asarray(Image.fromarray(image[y0:y1, x0:x1]).resize((size, size), resample))


def _polygon_in_crop(points: np.ndarray, crop, size: int) -> np.ndarray:
    x0, y0, x1, y1 = crop
    scaled = (points - np.array([x0, y0])) * np.array([size / (x1 - x0), size / (y1 - y0)])
    from engine.training.pairs import polygon_mask

    return polygon_mask(scaled, size, size)


def _box_in_crop(box, crop, size: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    return _polygon_in_crop(corners, crop, size)


def _widened(box, fraction: float):
    pad = fraction * max(box[2] - box[0], box[3] - box[1])
    return (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)


def initial_weights(source: Path) -> dict[str, torch.Tensor]:
    """Weights to start from: a model folder (model.safetensors) or a run folder's newest checkpoint (raw weights)."""
    from safetensors.torch import load_file

    from engine.training.checkpoint import load_latest_checkpoint

    if (source / "model.safetensors").is_file():
        return load_file(str(source / "model.safetensors"))
    checkpoint = load_latest_checkpoint(source)
    if checkpoint is None:
        raise TrainingError(f"{source}: --init-from needs a model folder (model.safetensors) or a run folder with checkpoints")
    return checkpoint.group("model")


def with_new_attribute_weights(weights: dict[str, torch.Tensor], config: CompactConfig,
                                log=print) -> dict[str, torch.Tensor]:
    """Warm-start weights for a model with ``config``: the attribute embeddings the weights lack (a model trained
    without attributes) start at zero, which leaves the model's outputs what they were; said in one line."""
    emb = 4 * config.widths[0]
    new = {f"attribute_embeddings.{name}.weight": torch.zeros(len(values) + 1, emb)
           for name, values in config.attributes if f"attribute_embeddings.{name}.weight" not in weights}
    if new:
        log(f"--init-from: {len(new)} new weights start at zero ({', '.join(new)})")
    return {**weights, **new}


def with_lifted_stem(weights: dict[str, torch.Tensor], config: CompactConfig, log=print) -> dict[str, torch.Tensor]:
    """Warm-start weights of a stem-1 model for a model with a space-to-depth stem (engine.models.compact_unet
    .lift_stem_weights: the same function at twice the resolution, its trunk unchanged); other weights unchanged.
    A first convolution that fits neither is left for the loader to refuse with the shapes."""
    stem, channels = config.stem, 2 * config.image_channels + 1
    if stem > 1 and tuple(weights["conv_in.weight"].shape[1:2]) == (channels,):
        log(f"--init-from: a stem-1 model lifted to a stem of {stem} (its first and last convolutions read and write "
            f"{stem}x{stem} cells)")
        return lift_stem_weights(weights, stem)
    return weights


class CompactInpaintTask(TrainingTask):
    noise_on_device = True
    name = "compact-inpaint"

    def __init__(self, corpus: Corpus, config: CompactTaskConfig | None = None, grid_rows: int = 8,
                 attribute_cache: Path | None = None):
        self.corpus = corpus
        self.config = config or CompactTaskConfig()
        self.attribute_cache = attribute_cache  # where the polyps' measured attributes are kept (the run folder)
        if self.config.attributes and not self.config.model.attributes:
            raise ValueError("attributes on needs a model with attribute embeddings (CompactConfig.attributes)")
        if self.config.rare_attribute_floor is not None and not self.config.attributes:
            raise ValueError("rare_attribute_floor draws polyps by their attributes: it needs attributes on")
        if self.config.attribute_lr_scale != 1.0 and not self.config.attributes:
            raise ValueError("attribute_lr_scale is the attribute embeddings' learning rate: it needs attributes on")
        self.polyp_frames = [f for f in corpus.train if f.has_polyp]
        self.normal_frames = [f for f in corpus.train if f.normal]
        self._visible: dict[int, np.ndarray] = {}
        self.alphas_cumprod = alphas_cumprod_of(self.config.scheduler)
        self.grid_rows = grid_rows
        if self.config.resolution % self.config.model.size_multiple:
            raise ValueError(f"resolution {self.config.resolution} is not a multiple of {self.config.model.size_multiple}")

    # ------------------------------------------------------------------ TrainingTask
    def describe(self) -> dict:
        # init_from is provenance (model card), not a setting a resume must repeat: a checkpoint replaces it
        config = {k: v for k, v in self.config.to_json().items() if k != "init_from"}
        return {"config": config, "corpus": {k: v for k, v in self.corpus.describe().items() if k != "held_out"},
                "held_out_sha": _digest(sorted(f.stem for f in self.corpus.held_out))}

    def build_model(self) -> torch.nn.Module:
        model = CompactInpaintUNet(self.config.model)
        if self.config.model.cell_shortcut:
            model.cell_shortcut_gain.copy_(self.cell_shortcut_gain())
        return model

    def cell_shortcut_gain(self) -> torch.Tensor:
        """The cell shortcut's gain per timestep (engine.models.compact_unet.cell_shortcut_gains) for the detail
        measured inside the stem's cells (cell_detail_variance)."""
        from engine.models.compact_unet import cell_shortcut_gains

        return cell_shortcut_gains(self.alphas_cumprod, self.cell_detail_variance(), self.config.model.stem)

    def cell_detail_variance(self) -> float:
        """The variance of real detail inside the stem's cells (a pixel minus its cell's mean, [-1, 1] units) on 64
        training crops of a fixed draw (the same on every resume); measured once."""
        if not hasattr(self, "_cell_detail_variance"):
            stem, batches = self.config.model.stem, -(-64 // self.config.batch_size)
            x0 = torch.cat([self.collate(self._raw_batch(np.random.default_rng(i), self.polyp_frames, self.normal_frames,
                                                         self.corpus.train, drop_labels=False))["x0"]
                            for i in range(batches)])
            cells = torch.nn.functional.avg_pool2d(x0, stem)
            detail = x0 - torch.nn.functional.interpolate(cells, scale_factor=stem, mode="nearest")
            self._cell_detail_variance = float(detail.pow(2).mean())
            print(f"cell shortcut: detail variance inside {stem}x{stem} cells {self._cell_detail_variance:.5f} "
                  f"({len(x0)} training crops)")
        return self._cell_detail_variance

    def provenance(self) -> dict:
        return {"init_from": self.config.init_from} if self.config.init_from else {}

    def initial_state(self):
        if not self.config.init_from:
            return None
        weights = with_lifted_stem(initial_weights(Path(self.config.init_from)), self.config.model)
        if self.config.model.cell_shortcut and "cell_shortcut_gain" not in weights:
            weights["cell_shortcut_gain"] = self.cell_shortcut_gain()
        return with_new_attribute_weights(weights, self.config.model) if self.attribute_columns else weights

    def samples_per_step(self) -> int:
        return self.config.batch_size

    def parameter_groups(self, model: torch.nn.Module) -> list[dict]:
        """One group, or with ``attribute_lr_scale`` ≠ 1 the attribute embeddings in a group of their own at that
        multiple of the learning rate and without weight decay (which would pull them back to zero)."""
        if self.config.attribute_lr_scale == 1.0 or not self.attribute_columns:
            return super().parameter_groups(model)
        embeddings = {id(p) for p in model.attribute_embeddings.parameters()}
        trainable = self.trainable_parameters(model)
        return [{"params": [p for p in trainable if id(p) not in embeddings]},
                {"params": [p for p in trainable if id(p) in embeddings],
                 "lr_scale": float(self.config.attribute_lr_scale), "weight_decay": 0.0}]

    def make_batch(self, step: int, rng: np.random.Generator) -> dict:
        return self.collate(self.make_raw_batch(step, rng))

    def warm_up(self) -> None:
        if self.attribute_columns:
            self.polyp_attributes()
        if self.config.rare_attribute_floor is not None:
            self.polyp_draw()

    def make_raw_batch(self, step: int, rng: np.random.Generator) -> dict:
        return self._raw_batch(rng, self.polyp_frames, self.normal_frames, self.corpus.train,
                               weighted=self.config.rare_attribute_floor is not None)

    def collate(self, raw: dict) -> dict:
        """uint8 crops and boolean masks → the model's [-1, 1] images and {0, 1} masks."""
        x0 = torch.from_numpy(raw["images"]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        batch = {"x0": x0, "mask": torch.from_numpy(raw["masks"])[:, None].float(),
                 "labels": torch.from_numpy(raw["labels"])}
        if "attributes" in raw:
            batch["attributes"] = torch.from_numpy(raw["attributes"])
        return batch

    def _batch(self, rng, polyp_frames, normal_frames, all_frames, drop_labels: bool = True) -> dict:
        return self.collate(self._raw_batch(rng, polyp_frames, normal_frames, all_frames, drop_labels))

    def _raw_batch(self, rng, polyp_frames, normal_frames, all_frames, drop_labels: bool = True,
                   weighted: bool = False) -> dict:
        """``weighted``: Polyp pairs drawn from the training polyps by polyp_draw's weights (rare attributes more
        often) instead of a frame of ``polyp_frames``, then one of its polyps."""
        size = self.config.resolution
        images = np.empty((self.config.batch_size, size, size, 3), np.uint8)
        masks = np.empty((self.config.batch_size, size, size), bool)
        labels = np.empty(self.config.batch_size, np.int64)
        with_attributes = bool(self.attribute_columns)
        attributes = np.zeros((self.config.batch_size, len(self.attribute_columns)), np.int64)
        for i in range(self.config.batch_size):
            source = None  # (frame, polyp index) of a Polyp pair
            if rng.random() < self.config.polyp_fraction:
                image, mask, label, source = (self._weighted_polyp_pair(rng) if weighted
                                              else self._polyp_pair_from(rng, polyp_frames))
            else:
                image, mask, label, source = self._normal_pair(rng, normal_frames, all_frames, polyp_frames)
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            image, mask = np.rot90(image, turns), np.rot90(mask, turns)
            if flip:
                image, mask = image[:, ::-1], mask[:, ::-1]
            images[i], masks[i] = image, mask
            dropped = rng.random() < self.config.unconditional_fraction
            labels[i] = UNCONDITIONAL if dropped and drop_labels else label
            if with_attributes and source is not None:
                row = self.attribute_row(*source)
                if drop_labels:  # each attribute on its own, and all of them with the label
                    kept = rng.random(len(row)) >= self.config.attribute_dropout
                    row = np.where(kept & (labels[i] != UNCONDITIONAL), row, 0)
                attributes[i] = row
        raw = {"images": images, "masks": masks, "labels": labels}
        if with_attributes:
            raw["attributes"] = attributes
        return raw

    # ------------------------------------------------------------------ attributes
    @property
    def attribute_columns(self) -> tuple:
        """The model's (name, values) per attribute column; () for a network without them (the detail stage's)."""
        return tuple(getattr(self.config.model, "attributes", ()))

    def polyp_attributes(self) -> dict[str, list]:
        """Frame rel → its polyps' measured attributes (engine.training.attribute_captions), measured once."""
        if not hasattr(self, "_polyp_attributes"):
            from engine.training.attribute_captions import corpus_attributes

            self._polyp_attributes = corpus_attributes(self.corpus.train + self.corpus.held_out, self.attribute_cache)
        return self._polyp_attributes

    def polyp_draw(self) -> tuple[list[tuple[CorpusFrame, int]], np.ndarray]:
        """The training polyps as (frame, polyp index) and the cumulative share of each in the weighted draw
        (engine.training.attribute_balance.rare_value_weights); built once, its shares said in one line."""
        if not hasattr(self, "_polyp_draw"):
            from engine.training.attribute_balance import rare_value_weights, shares_line, value_shares

            pairs, polyps, base = [], [], []
            for frame in self.polyp_frames:
                for index in range(len(frame.boxes)):
                    pairs.append((frame, index))
                    polyps.append(self.measured_attributes(frame, index))
                    base.append(1.0 / len(frame.boxes))
            weights = rare_value_weights(polyps, base, self.config.rare_attribute_floor)
            print(f"rare attributes drawn more often (floor {self.config.rare_attribute_floor:.2f}): "
                  f"{shares_line(value_shares(polyps, base), value_shares(polyps, weights))}", flush=True)
            cumulative = np.cumsum(weights)
            self._polyp_draw = (pairs, cumulative / cumulative[-1])
        return self._polyp_draw

    def _weighted_polyp_pair(self, rng):
        """A Polyp pair on a training polyp drawn by polyp_draw's weights, with (frame, polyp index)."""
        pairs, cumulative = self.polyp_draw()
        frame, index = pairs[min(int(np.searchsorted(cumulative, rng.random(), side="right")), len(pairs) - 1)]
        image, mask, label, index = self._polyp_pair_on(frame, rng, index)
        return image, mask, label, (frame, index)

    def measured_attributes(self, frame: CorpusFrame, index: int) -> dict:
        """The captioner's attributes of the frame's polyp ``index`` ({} where it was not measured)."""
        polyps = self.polyp_attributes().get(frame.rel) or []
        return (polyps[index] if index < len(polyps) else None) or {}

    def attribute_row(self, frame: CorpusFrame, index: int) -> np.ndarray:
        """The model's attribute indices of the frame's polyp ``index`` (0 where not measured)."""
        return np.array(attribute_indices(self.attribute_columns, self.measured_attributes(frame, index)), np.int64)

    def loss(self, model, batch, generator):
        x0, mask, labels = batch["x0"], batch["mask"], batch["labels"]
        count = x0.shape[0]
        # random draws on the step's generator (on the GPU when the trainer gives it one there: drawing a batch's
        # noise on the CPU would hold a GPU step up), then moved to the batch's device
        t = torch.randint(0, len(self.alphas_cumprod), (count,), generator=generator, device=generator.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
        noisy = add_noise(x0, noise, self.alphas_cumprod, t)
        model_input = torch.cat([noisy, x0 * (1 - mask), mask], dim=1)
        extra = {"attributes": batch["attributes"]} if "attributes" in batch else {}
        prediction = model(model_input, t.float().to(x0.device), labels, **extra)
        prediction_type = self.config.scheduler["prediction_type"]
        target = target_of(prediction_type, x0, noise, self.alphas_cumprod, t)
        weight = min_snr_weight(prediction_type, self.alphas_cumprod, t, self.config.min_snr_gamma)
        return inpainting_loss(prediction, target, mask, self.config.lg_weight, self.config.outside_weight, weight)

    def validate(self, model) -> dict:
        """Denoising loss on a fixed held-out batch with fixed noise: comparable from one validation to the next."""
        if not self.corpus.held_out:
            return {}
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in self._fixed_batch().items()}
        generator = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            loss, metrics = self.loss(model, batch, generator)
        return {"val_loss": float(loss), "val_mse_in_mask": metrics["mse_in_mask"]}

    def sample_grid(self, model, step: int, path: Path) -> None:
        from engine.training.plots import image_grid

        rows, labels = self.grid_rows_data()
        if not rows:
            return
        size = self.config.resolution
        seeds = (0, 1)
        images = torch.from_numpy(np.stack([r[0] for r in rows])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        masks = torch.from_numpy(np.stack([r[1] for r in rows]))[:, None].float()
        classes = torch.tensor([r[2] for r in rows])
        attributes = torch.from_numpy(np.stack(self._grid_attributes)) if bool(self.attribute_columns) else None
        columns = []
        for seed in seeds:
            noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
            out = sample_inpaint(model, images, masks, classes, noise, self.config.scheduler, self.config.sample_steps,
                                 self.config.sample_guidance, attributes=attributes)
            composite = out * masks + images * (1 - masks)
            columns.append(((composite.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
        grid_rows = []
        for i, (image, mask, _label) in enumerate(rows):
            masked = image.copy()
            masked[mask] = 128
            grid_rows.append([image, masked] + [c[i] for c in columns])
        picture = image_grid(grid_rows, labels, tile=size, header=["source", "mask"] + [f"seed {s}" for s in seeds])
        import io

        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        from engine.fileio import atomic_write_bytes

        atomic_write_bytes(path, buffer.getvalue())

    # ------------------------------------------------------------------ pairs
    def _visible_of(self, frame: CorpusFrame) -> np.ndarray:
        key = id(frame)
        if key not in self._visible:
            self._visible[key] = visible_area(frame.image)
        return self._visible[key]

    def _dark_of(self, frame: CorpusFrame) -> np.ndarray:
        key = ("dark", id(frame))
        if key not in self._visible:
            self._visible[key] = dark_area(frame.image)
        return self._visible[key]

    def _crop_for(self, frame: CorpusFrame, box, rng) -> tuple[int, int, int, int]:
        height, width = frame.image.shape[:2]
        longer = max(box[2] - box[0], box[3] - box[1])
        return region_crop(box, width, height, rng.uniform(*self.config.padding_range) * longer)

    def _polyp_pair_from(self, rng, frames):
        """A Polyp pair on a frame drawn from ``frames``, with (frame, polyp index)."""
        frame = frames[int(rng.integers(len(frames)))]
        image, mask, label, index = self._polyp_pair_on(frame, rng)
        return image, mask, label, (frame, index)

    def _polyp_pair_on(self, frame: CorpusFrame, rng, index: int | None = None):
        """A Polyp pair on ``frame``: its polyp ``index`` (None: one drawn), a crop around it, the mask of the
        task's mask mode; and the index of the polyp it took."""
        if index is None:
            index = int(rng.integers(len(frame.boxes)))
        box = frame.boxes[index]
        crop = self._crop_for(frame, box, rng)
        size = self.config.resolution
        image = _crop_resized(frame.image, crop, size, Image.Resampling.BILINEAR)
        if rng.random() < self.config.box_mask_fraction:
            mask = _box_in_crop(_widened(box, rng.uniform(0.0, 0.1)), crop, size)
        elif self.config.mask_mode == "bpm":
            mask = _polygon_in_crop(convex_polygon_in_box(box, rng), crop, size)
        else:
            height, width = frame.image.shape[:2]
            full = polyp_training_mask(self.config.mask_mode, box, frame.instance_masks[index], height, width, rng)
            mask = _crop_resized(full.astype(np.uint8) * 255, crop, size, Image.Resampling.NEAREST) > 127
        return image, mask, POLYP, index

    def _normal_pair(self, rng, normal_frames, all_frames, polyp_frames):
        """A free box on a normal frame (half the time, when there are any) or on any frame, outside its polyps;
        with None where a Polyp pair would give its (frame, polyp index)."""
        pool = normal_frames if normal_frames and rng.random() < 0.5 else all_frames
        for _ in range(20):
            frame = pool[int(rng.integers(len(pool)))]
            height, width = frame.image.shape[:2]
            box = normal_region_box(height, width, frame.boxes, self._visible_of(frame), rng,
                                    size_range=tuple(self.config.normal_size_range),
                                    dark=self._dark_of(frame) if self.config.normal_max_dark is not None else None,
                                    max_dark=self.config.normal_max_dark)
            if box is None:
                continue
            crop = self._crop_for(frame, box, rng)
            size = self.config.resolution
            image = _crop_resized(frame.image, crop, size, Image.Resampling.BILINEAR)
            if rng.random() < self.config.box_mask_fraction:
                mask = _box_in_crop(box, crop, size)
            else:
                mask = _polygon_in_crop(convex_polygon_in_box(box, rng), crop, size)
            return image, mask, NORMAL, None
        return self._polyp_pair_from(rng, polyp_frames)  # no free mucosa found in 20 frames: a Polyp pair instead

    # ------------------------------------------------------------------ fixed validation data
    def _fixed_batch(self) -> dict:
        if not hasattr(self, "_fixed"):
            held = self.corpus.held_out
            polyps = [f for f in held if f.has_polyp] or self.polyp_frames
            rng = np.random.default_rng(4321)
            batches = [self._batch(rng, polyps, [f for f in held if f.normal], held, drop_labels=False) for _ in range(2)]
            self._fixed = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        return self._fixed

    def grid_rows_data(self) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], list[str]]:
        """Fixed rows for the sample grid, from held-out frames: add at a BPM mask inside a real polyp's box,
        remove (prompt Normal) at the polyp's padded box, and add on a free box of mucosa. With attributes, the
        first rows ask the real polyp's measured attributes (``_grid_attributes``), the others none."""
        if hasattr(self, "_grid"):
            return self._grid
        held = sorted(self.corpus.held_out, key=lambda f: f.stem)
        polyp_frames = [f for f in held if f.has_polyp]
        size = self.config.resolution
        rows, labels = [], []
        self._grid_attributes = []
        columns = len(self.attribute_columns)
        rng = np.random.default_rng(99)
        count = self.grid_rows
        n_add, n_remove = max(1, count * 3 // 8), max(1, count * 3 // 8)
        for frame in polyp_frames[:n_add]:
            box = frame.boxes[0]
            crop = self._inference_crop(frame, box)
            rows.append((_crop_resized(frame.image, crop, size, Image.Resampling.BILINEAR),
                         _polygon_in_crop(convex_polygon_in_box(box, rng), crop, size), POLYP))
            labels.append(f"Polyp {frame.stem[:10]}")
            self._grid_attributes.append(self.attribute_row(frame, 0) if bool(self.attribute_columns)
                                         else np.zeros(columns, np.int64))
        for frame in polyp_frames[n_add:n_add + n_remove]:
            box = frame.boxes[0]
            pad = 0.1 * max(box[2] - box[0], box[3] - box[1])
            padded = (box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad)
            crop = self._inference_crop(frame, padded)
            x0, y0, x1, y1 = crop
            corners = np.array([[padded[0], padded[1]], [padded[2], padded[1]], [padded[2], padded[3]], [padded[0], padded[3]]])
            rows.append((_crop_resized(frame.image, crop, size, Image.Resampling.BILINEAR),
                         _polygon_in_crop(corners, crop, size), NORMAL))
            labels.append(f"Normal {frame.stem[:10]}")
            self._grid_attributes.append(np.zeros(columns, np.int64))
        for frame in (held[::-1])[: count - len(rows)]:
            height, width = frame.image.shape[:2]
            box = normal_region_box(height, width, frame.boxes, visible_area(frame.image), rng)
            if box is None:
                continue
            crop = self._inference_crop(frame, box)
            rows.append((_crop_resized(frame.image, crop, size, Image.Resampling.BILINEAR),
                         _polygon_in_crop(convex_polygon_in_box(box, rng), crop, size), POLYP))
            labels.append(f"Polyp@free {frame.stem[:7]}")
            self._grid_attributes.append(np.zeros(columns, np.int64))
        self._grid = (rows, labels)
        return self._grid

    def _inference_crop(self, frame: CorpusFrame, box) -> tuple[int, int, int, int]:
        height, width = frame.image.shape[:2]
        return region_crop(box, width, height, auto_region_padding(box))

    def summary(self, model) -> dict:
        figures = {"parameters": parameter_count(model)}
        if self.config.model.cell_shortcut:
            figures["cell_detail_variance"] = round(self.cell_detail_variance(), 6)
        return figures


def _digest(items: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(items).encode("utf-8")).hexdigest()[:16]


def sample_inpaint(model, images: torch.Tensor, masks: torch.Tensor, classes: torch.Tensor, noise: torch.Tensor,
                   scheduler_config: dict, steps: int, guidance: float, tokens: torch.Tensor | None = None,
                   uncond_tokens: torch.Tensor | None = None, attributes: torch.Tensor | None = None) -> torch.Tensor:
    """The torch original of the engine's sampler: diffusers' DDIM on the model's v-prediction, classifier-free
    guidance against the unconditional class as one batch (unconditional half first).

    ``tokens`` (a model that also takes text, the compact CCIS ControlNet): the caption's token ids, guided against
    (class 0, ``uncond_tokens``). ``attributes`` (a model trained with attributes): int (B, A) indices, guided
    against all zeros."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config({k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    scheduler.set_timesteps(steps)
    guided = guidance > 1.0
    device = next(model.parameters()).device
    images, masks, classes, noise = images.to(device), masks.to(device), classes.to(device), noise.to(device)
    condition = torch.cat([images * (1 - masks), masks], dim=1)
    x = noise * scheduler.init_noise_sigma
    labels = torch.cat([torch.zeros_like(classes), classes]) if guided else classes
    text = () if tokens is None else ((torch.cat([uncond_tokens, tokens]) if guided else tokens).to(device),)
    asked = {}
    if attributes is not None:
        asked["attributes"] = (torch.cat([torch.zeros_like(attributes), attributes]) if guided else attributes).to(device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for t in scheduler.timesteps:
            copies = 2 if guided else 1
            model_input = scheduler.scale_model_input(torch.cat([x] * copies), t)
            prediction = model(torch.cat([model_input, torch.cat([condition] * copies)], dim=1),
                               t.float().reshape(1).expand(model_input.shape[0]).to(device), labels, *text, **asked)
            if guided:
                uncond, cond = prediction.chunk(2)
                prediction = uncond + guidance * (cond - uncond)
            x = scheduler.step(prediction, t, x).prev_sample
    model.train(was_training)
    return x.cpu()


def build(options, corpus: Corpus) -> tuple[CompactInpaintTask, TrainConfig]:
    """The task and trainer settings of ``main.py train --preset compact``: each option the command leaves unset
    (None) keeps CompactTaskConfig's value or COMPACT_DEFAULTS'."""
    defaults = CompactTaskConfig()
    model = defaults.model
    with_attributes = bool(getattr(options, "attributes", False))
    model = CompactConfig(
        widths=options.widths or model.widths, blocks=options.blocks if options.blocks is not None else model.blocks,
        stem=options.stem if options.stem is not None else model.stem,
        attention_levels=options.attention_levels if options.attention_levels is not None else model.attention_levels,
        attributes=MODEL_ATTRIBUTES if with_attributes else (),
        cell_shortcut=SCHEDULER_CONFIG["num_train_timesteps"] if getattr(options, "cell_shortcut", False) else 0,
    )
    gamma = defaults.min_snr_gamma if options.min_snr_gamma is None else (options.min_snr_gamma or None)
    shift = float(getattr(options, "schedule_shift", None) or 1.0)
    scheduler = dict(SCHEDULER_CONFIG)
    if shift != 1.0:
        scheduler["trained_betas"] = [float(b) for b in shifted_cosine_betas(scheduler["num_train_timesteps"], shift)]
    task_config = CompactTaskConfig(
        resolution=pick(options, "resolution", COMPACT_DEFAULTS), model=model,
        batch_size=pick(options, "batch_size", COMPACT_DEFAULTS), polyp_fraction=options.polyp_fraction,
        mask_mode=options.mask_mode or "bpm", lg_weight=options.lg_weight,
        outside_weight=defaults.outside_weight if options.outside_weight is None else options.outside_weight,
        min_snr_gamma=gamma,
        box_mask_fraction=defaults.box_mask_fraction if options.box_mask_fraction is None else options.box_mask_fraction,
        init_from=str(Path(options.init_from).resolve()) if options.init_from else None,
        attributes=with_attributes,
        rare_attribute_floor=getattr(options, "rare_attributes", None),
        attribute_lr_scale=getattr(options, "attribute_lr_scale", None) or 1.0,
        normal_size_range=tuple(getattr(options, "normal_sizes", None) or NORMAL_SIZE_RANGE),
        normal_max_dark=getattr(options, "normal_max_dark", None),
        scheduler=scheduler, schedule_shift=shift,
    )
    cache = Path(options.run) / ATTRIBUTE_CACHE if with_attributes else None
    return (CompactInpaintTask(corpus, task_config, attribute_cache=cache),
            generator_config(options, COMPACT_DEFAULTS))


def output(task: CompactInpaintTask) -> ModelOutput:
    """The model folder (engine.models.compact_unet) and a "pixel-inpaint" bundle."""

    def write(model, folder: Path) -> Path:
        from engine.models.compact_unet import save_compact_model

        return save_compact_model(model, task.config, folder)

    def export(model_dir: Path, bundle: Path, name: str | None, card: Path) -> Path:
        from engine.export.compact_export import export_compact_bundle

        return export_compact_bundle(model_dir, bundle, name=name, card=card)

    return ModelOutput("model", "model folder", write, export)


ENTRY = TaskEntry(build, output)
