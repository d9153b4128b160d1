"""Fine-tuning a diffusers Stable-Diffusion-inpainting folder with Polyp-Gen's spatial-aware training
(``main.py train --from DIR``): stable-diffusion-2-inpainting, or the public Polyp-Gen checkpoint continued on a
hospital's own frames.

Only the U-Net trains; the VAE and the text encoder are frozen (the prompts "Polyp" and "Normal" are encoded once).
A sample is a whole frame resized to ``resolution``² (as Polyp-Gen resizes its 560×480 frames to 512²) with the
pair's mask: a BPM polygon in a polyp's box for "Polyp" (``--mask-mode`` pixel / box are the alternatives), a
free box's polygon on a normal frame or outside every polyp box for "Normal". The U-Net input is diffusers'
inpainting layout [noisy latents, mask at latent size, masked-image latents]; the target is the scheduler's
prediction type; the loss is MSE + λ·lesion-guided MSE over the latent mask (engine.training.objectives).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.errors import InputError
from engine.training.corpus import Corpus, CorpusFrame
from engine.training.diffusers_folder import unet_in_channels
from engine.training.task import TrainConfig, TrainingTask
from engine.training.objectives import inpainting_loss, min_snr_weight, target_of
from engine.training.pairs import convex_polygon_in_box, normal_region_box, polyp_training_mask, polygon_mask, visible_area
from engine.training.recipe import SD_DEFAULTS, ModelOutput, TaskEntry, generator_config, pick


@dataclass
class SDTaskConfig:
    source: str
    resolution: int = 512
    batch_size: int = 2
    polyp_fraction: float = 0.7
    mask_mode: str = "bpm"
    lg_weight: float = 0.5
    min_snr_gamma: float | None = None
    prompts: dict = field(default_factory=lambda: {"polyp": "Polyp", "normal": "Normal"})
    sample_steps: int = 20

    def to_json(self) -> dict:
        return asdict(self)


def check_inpainting_folder(source: Path) -> None:
    channels = unet_in_channels(source)
    if channels != 9:
        raise InputError(f"{source / 'unet' / 'config.json'}: a {channels}-channel U-Net; fine-tuning needs an "
                         "inpainting U-Net (9 channels: latents + mask + masked-image latents), e.g. "
                         "stable-diffusion-2-inpainting")


class SDInpaintTask(TrainingTask):
    name = "sd-inpaint"

    def __init__(self, corpus: Corpus, config: SDTaskConfig):
        from diffusers import AutoencoderKL, DDPMScheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        source = Path(config.source)
        check_inpainting_folder(source)
        self.corpus, self.config, self.source = corpus, config, source
        self.vae = AutoencoderKL.from_pretrained(source / "vae", local_files_only=True).eval().requires_grad_(False)
        scheduler_config = DDPMScheduler.load_config(source / "scheduler")
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        self.noise_scheduler = DDPMScheduler.from_config(scheduler_config)
        self.alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(torch.float32)
        tokenizer = CLIPTokenizer.from_pretrained(source / "tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(source / "text_encoder", local_files_only=True).eval()
        with torch.no_grad():
            ids = tokenizer([config.prompts["polyp"], config.prompts["normal"]], padding="max_length",
                            max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
            self.prompt_embeddings = text_encoder(ids)[0]
        del text_encoder
        self.scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.scaling_factor = float(self.vae.config.get("scaling_factor", 0.18215))
        self.polyp_frames = [f for f in corpus.train if f.has_polyp]
        self.normal_frames = [f for f in corpus.train if f.normal]
        if config.resolution % (self.scale * 8):
            raise InputError(f"resolution {config.resolution} must be a multiple of {self.scale * 8} for this model")

    def describe(self) -> dict:
        return {"config": self.config.to_json(), "corpus": {k: v for k, v in self.corpus.describe().items() if k != "held_out"}}

    def build_model(self):
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_pretrained(self.source / "unet", local_files_only=True)

    def samples_per_step(self) -> int:
        return self.config.batch_size

    def _pair(self, rng, frame: CorpusFrame, polyp: bool):
        size = self.config.resolution
        height, width = frame.image.shape[:2]
        sx, sy = size / width, size / height
        image = np.asarray(Image.fromarray(frame.image).resize((size, size), Image.Resampling.BILINEAR))
        if polyp:
            index = int(rng.integers(len(frame.boxes)))
            x0, y0, x1, y1 = frame.boxes[index]
            box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
            instance = frame.instance_masks[index]
            if instance is not None:
                instance = np.asarray(Image.fromarray(instance.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)) > 127
            return image, polyp_training_mask(self.config.mask_mode, box, instance, size, size, rng), 0
        boxes = [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in frame.boxes]
        box = normal_region_box(size, size, boxes, visible_area(image), rng)
        if box is None:
            return None
        return image, polygon_mask(convex_polygon_in_box(box, rng), size, size), 1

    def make_batch(self, step: int, rng: np.random.Generator) -> dict:
        images, masks, labels = [], [], []
        while len(images) < self.config.batch_size:
            polyp = rng.random() < self.config.polyp_fraction or not (self.normal_frames or self.corpus.train)
            pool = self.polyp_frames if polyp else (self.normal_frames if self.normal_frames and rng.random() < 0.5 else self.corpus.train)
            made = self._pair(rng, pool[int(rng.integers(len(pool)))], polyp)
            if made is None:
                continue
            image, mask, label = made
            if rng.integers(2):
                image, mask = image[:, ::-1], mask[:, ::-1]
            images.append(np.ascontiguousarray(image))
            masks.append(np.ascontiguousarray(mask))
            labels.append(label)
        x0 = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return {"x0": x0, "mask": torch.from_numpy(np.stack(masks))[:, None].float(), "labels": torch.tensor(labels)}

    def _encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self.vae.to(pixels.device)
        distribution = self.vae.encode(pixels).latent_dist
        noise = torch.randn(distribution.mean.shape, generator=generator).to(pixels.device)
        return (distribution.mean + distribution.std * noise) * self.scaling_factor

    def loss(self, model, batch, generator):
        x0, mask, labels = batch["x0"], batch["mask"], batch["labels"]
        with torch.no_grad():
            latents = self._encode(x0, generator)
            masked_latents = self._encode(x0 * (mask < 0.5), generator)
        latent_mask = F.interpolate(mask, size=latents.shape[-2:], mode="nearest")
        t = torch.randint(0, len(self.alphas_cumprod), (x0.shape[0],), generator=generator)
        noise = torch.randn(latents.shape, generator=generator).to(x0.device)
        a = self.alphas_cumprod[t].reshape(-1, 1, 1, 1).to(x0.device)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        model_input = torch.cat([noisy, latent_mask, masked_latents], dim=1)
        text = self.prompt_embeddings.to(x0.device)[labels]
        prediction = model(model_input, t.to(x0.device), encoder_hidden_states=text).sample
        target = target_of(self.prediction_type, latents, noise, self.alphas_cumprod, t)
        weight = min_snr_weight(self.prediction_type, self.alphas_cumprod, t, self.config.min_snr_gamma)
        return inpainting_loss(prediction, target, latent_mask, self.config.lg_weight, 1.0, weight)

    def sample_grid(self, model, step: int, path: Path) -> None:
        """Held-out frames: source | mask | generated (Polyp at a BPM mask in the polyp's box), DDIM, fixed seeds."""
        from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline

        from engine.fileio import save_png_atomic
        from engine.training.plots import image_grid

        held = sorted((f for f in self.corpus.held_out if f.has_polyp), key=lambda f: f.stem)[:4]
        if not held:
            return
        pipe = StableDiffusionInpaintPipeline.from_pretrained(self.source, unet=model, local_files_only=True,
                                                              safety_checker=None, requires_safety_checker=False)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        rows, labels = [], []
        rng = np.random.default_rng(7)
        for index, frame in enumerate(held):
            image, mask, _ = self._pair(rng, frame, True)
            out = pipe(prompt=self.config.prompts["polyp"], image=Image.fromarray(image),
                       mask_image=Image.fromarray(mask.astype(np.uint8) * 255), height=self.config.resolution,
                       width=self.config.resolution, num_inference_steps=self.config.sample_steps,
                       generator=torch.Generator().manual_seed(index), output_type="np").images[0]
            masked = image.copy()
            masked[mask] = 128
            rows.append([image, masked, (out * 255).round().astype(np.uint8)])
            labels.append(frame.stem[:16])
        save_png_atomic(path, np.asarray(image_grid(rows, labels, tile=min(256, self.config.resolution),
                                                    header=["source", "mask", "generated"])))

    def save_pipeline(self, model, folder: Path) -> Path:
        """The fine-tuned pipeline as a diffusers folder: the source with its U-Net replaced."""
        from diffusers import StableDiffusionInpaintPipeline

        pipe = StableDiffusionInpaintPipeline.from_pretrained(self.source, unet=model, local_files_only=True,
                                                              safety_checker=None, requires_safety_checker=False)
        from engine.training.checkpoint import save_pretrained_atomically

        return save_pretrained_atomically(pipe, folder)


def build(options, corpus: Corpus) -> tuple[SDInpaintTask, TrainConfig]:
    """The task and trainer settings of ``main.py train --from SD_INPAINT_DIR`` (SD_DEFAULTS where unset)."""
    gamma = None if not options.min_snr_gamma else options.min_snr_gamma
    task_config = SDTaskConfig(source=str(Path(options.source).resolve()),
                               resolution=pick(options, "resolution", SD_DEFAULTS),
                               batch_size=pick(options, "batch_size", SD_DEFAULTS), polyp_fraction=options.polyp_fraction,
                               mask_mode=options.mask_mode or "bpm", lg_weight=options.lg_weight, min_snr_gamma=gamma)
    return SDInpaintTask(corpus, task_config), generator_config(options, SD_DEFAULTS)


def output(task: SDInpaintTask) -> ModelOutput:
    """The fine-tuned pipeline as a diffusers folder and an "sd-inpaint" bundle carrying the model card."""

    def export(folder: Path, bundle: Path, name: str | None, card: Path) -> Path:
        from engine.export.inpaint_export import export_inpaint_bundle
        from engine.training.model_card import attach_model_card

        export_inpaint_bundle(folder, bundle, name=name, overwrite=True)
        attach_model_card(bundle, card)
        return bundle

    return ModelOutput("diffusers", "diffusers folder", task.save_pipeline, export)


ENTRY = TaskEntry(build, output)
