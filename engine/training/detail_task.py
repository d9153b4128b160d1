"""Training the compact model's detail stage (``main.py train --method detail --preset compact --init-from BASE``):
a cascade's super-resolution stage (SR3, Cascaded Diffusion) for region inpainting, on real crops.

A training sample is the compact task's pair (engine.training.compact_task: a polyp's or a free region's crop,
widened by 15–50 %, its BPM / box / polygon mask, turned and flipped) at ``resolution``² (128² over the 64²
base). The low-resolution input is that real crop brought down to the base's working size and back up
(engine.pipelines.compact.upsampled_condition, the very function the engine applies to the base's result), so
no base model runs while training; conditioning augmentation adds Gaussian noise of a random level (a timestep
of the same schedule, 0 to ``max_noise_level``) to it, and the network is told the level: the base's output is
no real downsampled crop, and a stage that trusted its low-resolution input's fine detail would copy the
base's blur. Sampling uses the fixed ``sample_noise_level``. The model also sees the masked crop at full
working size (the real surroundings) and the mask. Objective: the base's (v-prediction on its cosine schedule,
min-SNR-γ 5, the loss focused inside the mask, outside weight 0.1, plus the lesion-guided term).

``--init-from`` names the compact base the stage belongs to: its resolution sets the scale, its scheduler is
the stage's, and the run's bundle (``--to``) is that base's bundle with the detail part added. The stage itself
trains from scratch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.errors import InputError
from engine.models.compact_unet import parameter_count
from engine.models.detail_unet import DetailConfig, DetailUNet
from engine.pipelines.compact import DETAIL_MIN_REGION_SIDE, upsampled_condition
from engine.training.compact_task import (
    SCHEDULER_CONFIG,
    CompactInpaintTask,
    CompactTaskConfig,
)
from engine.training.corpus import Corpus
from engine.training.objectives import (
    add_noise,
    inpainting_loss,
    min_snr_weight,
    target_of,
)
from engine.training.recipe import (
    DETAIL_DEFAULTS,
    ModelOutput,
    TaskEntry,
    generator_config,
    pick,
)
from engine.training.task import TrainConfig


@dataclass
class DetailTaskConfig(CompactTaskConfig):
    resolution: int = 128
    base_resolution: int = 64  # the base's working size: the low-resolution input is the crop brought to it
    model: DetailConfig = field(default_factory=DetailConfig)  # type: ignore[assignment]
    batch_size: int = 16
    max_noise_level: int = 250  # conditioning augmentation: levels drawn uniformly from 0..this
    sample_noise_level: int = 50  # the level at sampling
    sample_steps: int = 8
    min_region_side: int = DETAIL_MIN_REGION_SIDE  # the engine runs the stage on larger region crops only
    scheduler: dict = field(default_factory=lambda: dict(SCHEDULER_CONFIG))

    @property
    def scale(self) -> int:
        return self.resolution // self.base_resolution


class DetailTask(CompactInpaintTask):
    """The compact task's pairs and held-out rows; its own network, conditioning and sampler."""
    noise_on_device = False  # its loss draws on a CPU generator

    name = "compact-detail"

    def __init__(self, corpus: Corpus, config: DetailTaskConfig, grid_rows: int = 8):
        if config.resolution % config.base_resolution or config.resolution < 2 * config.base_resolution:
            raise InputError(f"the detail stage's resolution {config.resolution} must be a multiple (2 or more) of "
                             f"the base's {config.base_resolution}")
        if not 0 <= config.sample_noise_level <= config.max_noise_level < 1000:
            raise InputError(f"noise levels: 0 ≤ sample {config.sample_noise_level} ≤ max {config.max_noise_level} < 1000")
        super().__init__(corpus, config, grid_rows)

    # ------------------------------------------------------------------ TrainingTask
    def build_model(self) -> torch.nn.Module:
        return DetailUNet(self.config.model)

    def provenance(self) -> dict:
        return {"base": self.config.init_from} if self.config.init_from else {}

    def initial_state(self):
        return None  # from scratch: --init-from names the base, not weights of this network

    def collate(self, raw: dict) -> dict:
        batch = super().collate(raw)
        return {**batch, "low": self._low_of(batch["x0"])}

    def _low_of(self, x0: torch.Tensor) -> torch.Tensor:
        """The low-resolution input of real crops: each brought down to the base's size and back up."""
        pixels = ((x0 + 1.0) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        base = self.config.base_resolution
        size = (x0.shape[3], x0.shape[2])
        low = [upsampled_condition(np.asarray(Image.fromarray(p).resize((base, base), Image.Resampling.LANCZOS)), size)
               for p in pixels]
        return torch.from_numpy(np.stack(low))

    def loss(self, model, batch, generator):
        x0, mask, low = batch["x0"], batch["mask"], batch["low"]
        count = x0.shape[0]
        t = torch.randint(0, len(self.alphas_cumprod), (count,), generator=generator)
        level = torch.randint(0, self.config.max_noise_level + 1, (count,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        low_noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        noisy = add_noise(x0, noise, self.alphas_cumprod, t)
        augmented = add_noise(low.to(x0.device), low_noise, self.alphas_cumprod, level)
        model_input = torch.cat([noisy, augmented, x0 * (1 - mask), mask], dim=1)
        prediction = model(model_input, t.float().to(x0.device), level.float().to(x0.device))
        prediction_type = self.config.scheduler["prediction_type"]
        target = target_of(prediction_type, x0, noise, self.alphas_cumprod, t)
        weight = min_snr_weight(prediction_type, self.alphas_cumprod, t, self.config.min_snr_gamma)
        return inpainting_loss(prediction, target, mask, self.config.lg_weight, self.config.outside_weight, weight)

    def _fixed_batch(self) -> dict:
        fixed = super()._fixed_batch()
        if "low" not in fixed:
            fixed["low"] = self._low_of(fixed["x0"])
        return fixed

    def validate(self, model) -> dict:
        """The held-out denoising loss, and the detail the stage adds on the grid's held-out rows: high-frequency
        energy inside the mask of its samples and of the low-resolution input, each over the real crops'."""
        metrics = super().validate(model)
        rows = self._grid_tensors()
        if rows is None:
            return metrics
        images, masks, low = rows
        out = self._sample(model, images, masks, low, seed=0)
        real = high_frequency_energy(images, masks)
        return {**metrics, "hf_detail_over_real": high_frequency_energy(out, masks) / real,
                "hf_lowres_over_real": high_frequency_energy(low, masks) / real}

    def sample_grid(self, model, step: int, path: Path) -> None:
        """[masked crop | low-resolution input | detail output (two seeds) | real], the outputs inside the mask."""
        from engine.fileio import atomic_write_bytes
        from engine.training.plots import image_grid

        rows = self._grid_tensors()
        if rows is None:
            return
        images, masks, low = rows

        def pictures(batch: torch.Tensor) -> np.ndarray:
            composite = batch * masks + images * (1 - masks)
            return ((composite.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

        real = pictures(images)
        masked = real.copy()
        masked[masks[:, 0].numpy() > 0] = 128
        columns = [masked, pictures(low)] + [pictures(self._sample(model, images, masks, low, seed)) for seed in (0, 1)]
        columns.append(real)
        _, labels = self.grid_rows_data()
        grid_rows = [[column[i] for column in columns] for i in range(len(real))]
        header = ["masked", f"{self.config.base_resolution}px bicubic", "detail s0", "detail s1", "real"]
        picture = image_grid(grid_rows, labels, tile=self.config.resolution, header=header)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())

    def summary(self, model) -> dict:
        return {"parameters": parameter_count(model)}

    # ------------------------------------------------------------------ held-out rows
    def _grid_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        rows, _ = self.grid_rows_data()
        if not rows:
            return None
        images = torch.from_numpy(np.stack([r[0] for r in rows])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        masks = torch.from_numpy(np.stack([r[1] for r in rows]))[:, None].float()
        return images, masks, self._low_of(images)

    def _sample(self, model, images, masks, low, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(images.shape, generator=generator)
        low_noise = torch.randn(images.shape, generator=generator)
        return sample_detail(model, low, images, masks, noise, low_noise, self.config.scheduler,
                             self.config.sample_steps, self.config.sample_noise_level)


def high_frequency_energy(images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean squared Laplacian (per channel, in [-1, 1] units) over the pixels inside the masks, the masks'
    1-px edge left out (a composite's seam is no detail)."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).reshape(1, 1, 3, 3).repeat(3, 1, 1, 1)
    laplacian = torch.nn.functional.conv2d(images.float(), kernel, groups=3)
    inside = -torch.nn.functional.max_pool2d(-masks.float(), 3, stride=1)  # eroded by one pixel, same crop
    return float((laplacian**2 * inside).sum() / (3 * inside.sum()).clamp_min(1.0))


def sample_detail(model, low: torch.Tensor, images: torch.Tensor, masks: torch.Tensor, noise: torch.Tensor,
                  low_noise: torch.Tensor, scheduler_config: dict, steps: int, noise_level: int) -> torch.Tensor:
    """The torch original of the engine's detail stage: the low-resolution input noised to ``noise_level`` with
    ``low_noise``, then diffusers' DDIM on the model's v-prediction from ``noise`` (no guidance)."""
    from diffusers import DDIMScheduler

    from engine.training.objectives import alphas_cumprod_of

    scheduler = DDIMScheduler.from_config({k: v for k, v in scheduler_config.items() if not k.startswith("_")})
    scheduler.set_timesteps(steps)
    level = torch.full((images.shape[0],), noise_level)
    augmented = add_noise(low, low_noise, alphas_cumprod_of(scheduler_config), level)
    condition = torch.cat([augmented, images * (1 - masks), masks], dim=1)
    x = noise * scheduler.init_noise_sigma
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t)
            prediction = model(torch.cat([model_input, condition], dim=1), t.float().reshape(1).expand(x.shape[0]),
                               level.float())
            x = scheduler.step(prediction, t, x).prev_sample
    model.train(was_training)
    return x


def build(options, corpus: Corpus) -> tuple[DetailTask, TrainConfig]:
    """The task and trainer settings of ``main.py train --method detail --preset compact --init-from BASE``: the
    base's resolution and scheduler, the stage's resolution (twice the base's unless ``--resolution``) and
    architecture from the options or DetailTaskConfig, the trainer's from the options or DETAIL_DEFAULTS."""
    from engine.models.compact_unet import load_compact_model

    if options.init_from is None:
        raise InputError("--method detail trains the detail stage of a compact base: give --init-from MODEL_DIR "
                         "(e.g. training_runs/compact-anneal/model)")
    if getattr(options, "attention_levels", None):
        raise InputError("--attention-levels: the detail stage has no attention")
    _, base_config = load_compact_model(Path(options.init_from))
    base_task = base_config.get("task", {})
    base_resolution = int(base_task.get("resolution", 64))
    defaults = {**DETAIL_DEFAULTS, "resolution": 2 * base_resolution}
    plain = DetailTaskConfig()
    model = DetailConfig(widths=options.widths or plain.model.widths,
                         blocks=plain.model.blocks if options.blocks is None else options.blocks,
                         stem=plain.model.stem if options.stem is None else options.stem)
    gamma = plain.min_snr_gamma if options.min_snr_gamma is None else (options.min_snr_gamma or None)
    task_config = DetailTaskConfig(
        resolution=pick(options, "resolution", defaults), base_resolution=base_resolution, model=model,
        batch_size=pick(options, "batch_size", defaults), polyp_fraction=options.polyp_fraction,
        mask_mode=options.mask_mode or plain.mask_mode, lg_weight=options.lg_weight,
        outside_weight=plain.outside_weight if options.outside_weight is None else options.outside_weight,
        min_snr_gamma=gamma,
        box_mask_fraction=plain.box_mask_fraction if options.box_mask_fraction is None else options.box_mask_fraction,
        scheduler=dict(base_task.get("scheduler", SCHEDULER_CONFIG)),
        init_from=str(Path(options.init_from).resolve()),
    )
    return DetailTask(corpus, task_config), generator_config(options, defaults)


def output(task: DetailTask) -> ModelOutput:
    """The detail model folder and, with ``--to``, the base's pixel-inpaint bundle with the detail part added."""

    def write(model, folder: Path) -> Path:
        from engine.models.detail_unet import save_detail_model

        return save_detail_model(model, task.config, folder)

    def export(folder: Path, bundle: Path, name: str | None, card: Path) -> Path:
        from engine.export.compact_export import export_compact_bundle

        base = Path(task.config.init_from)
        base_card = base / "MODEL_CARD.md"
        return export_compact_bundle(base, bundle, name=name, card=base_card if base_card.is_file() else None,
                                     detail_dir=folder, detail_card=card)

    return ModelOutput("model", "detail model folder", write, export, {"base": task.config.init_from})


ENTRY = TaskEntry(build, output)
