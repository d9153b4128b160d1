"""Training CCIS-Diff's ControlNet (``main.py train --method ccis --from SD15_DIR --captions FILE``) on the one trainer.

The base is a diffusers SD-1.5-shaped *text-to-image* folder (the paper's base); its VAE, text encoder and U-Net
are frozen. Only the ControlNet (engine.models.sd_controlnet.CCISControlNetModel: a trainable copy of the base U-Net's
encoder with zero convolutions, plus blur-mask weighting and text-aware attention, each switchable for the
paper's ablation) trains. A sample is a training frame resized to ``resolution``², its polyp mask (all of its
polyps) as the 3-channel condition image, and its clinical caption (``main.py caption`` writes them) as the
prompt — replaced by "" for ``text_dropout`` of the samples so classifier-free guidance works at sampling time.
The loss is the base scheduler's prediction type (ε or v) MSE on the VAE latents, the ControlNet's residuals
added to the frozen U-Net as in diffusers' ControlNet training. Noise, timesteps and the VAE posterior sample
come from the trainer's per-step generator, so ``--resume`` continues exactly.

At the end the ControlNet is saved as a diffusers folder and, with ``--to``, exported as an "sd-controlnet"
bundle by the existing exporter (its parity check included), the model card hashed inside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.errors import InputError
from engine.training.captions import contrasting_caption, frame_captions
from engine.training.corpus import Corpus, CorpusFrame
from engine.training.diffusers_folder import unet_in_channels
from engine.training.objectives import target_of
from engine.training.recipe import (
    CCIS_DEFAULTS,
    ModelOutput,
    TaskEntry,
    generator_config,
    pick,
)
from engine.training.task import TrainConfig, TrainingTask


@dataclass
class CCISTaskConfig:
    source: str  # the SD-1.5 text-to-image folder
    captions: str  # the captions file
    resolution: int = 512
    batch_size: int = 4
    text_dropout: float = 0.5
    blur_mask_weighting: bool = True
    text_aware_attention: bool = True
    blur_sigma: float | None = None  # pixels; None: 8 px at 512² (our reading), scaled with the resolution
    controlnet_from: str | None = None  # continue this ControlNet folder instead of copying the U-Net's encoder
    allow_uncaptioned: bool = False
    sample_steps: int = 20
    sample_guidance: float = 7.0

    def sigma(self) -> float:
        return 8.0 * self.resolution / 512.0 if self.blur_sigma is None else float(self.blur_sigma)

    def to_json(self) -> dict:
        return {**asdict(self), "blur_sigma": self.sigma()}


def check_text_to_image_folder(source: Path) -> None:
    channels = unet_in_channels(source)
    if channels != 4:
        raise InputError(f"{source / 'unet' / 'config.json'}: a {channels}-channel U-Net; a CCIS ControlNet trains "
                         "on a text-to-image base (4 latent channels, SD-1.5-shaped), not an inpainting one")


class CCISControlNetTask(TrainingTask):
    name = "ccis-controlnet"

    def __init__(self, corpus: Corpus, config: CCISTaskConfig):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        source = Path(config.source)
        check_text_to_image_folder(source)
        if not 0.0 <= config.text_dropout <= 1.0:
            raise InputError(f"text dropout {config.text_dropout}: must be between 0 and 1")
        self.corpus, self.config, self.source = corpus, config, source
        self.captions = frame_captions(corpus, Path(config.captions), config.allow_uncaptioned)
        self.uncaptioned = sum(1 for text in self.captions.values() if not text)
        self.frames = [f for f in corpus.train if f.has_polyp]
        if not self.frames:
            raise InputError("no training frame with a polyp mask: a CCIS ControlNet learns from frames + masks")
        self.vae = AutoencoderKL.from_pretrained(source / "vae", local_files_only=True).eval().requires_grad_(False)
        self.unet = UNet2DConditionModel.from_pretrained(source / "unet", local_files_only=True).eval().requires_grad_(False)
        self.tokenizer = CLIPTokenizer.from_pretrained(source / "tokenizer", local_files_only=True)
        self.text_encoder = CLIPTextModel.from_pretrained(source / "text_encoder", local_files_only=True).eval()
        self.text_encoder.requires_grad_(False)
        scheduler_config = DDPMScheduler.load_config(source / "scheduler")
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        self.alphas_cumprod = DDPMScheduler.from_config(scheduler_config).alphas_cumprod.to(torch.float32)
        self.scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.scaling_factor = float(self.vae.config.get("scaling_factor", 0.18215))
        self._embedding_cache: dict[str, torch.Tensor] = {}
        if config.resolution % (self.scale * 2 ** (len(self.unet.config.block_out_channels) - 1)):
            raise InputError(f"resolution {config.resolution} must be a multiple of "
                             f"{self.scale * 2 ** (len(self.unet.config.block_out_channels) - 1)} for this base")

    # ------------------------------------------------------------------ what the run is
    def describe(self) -> dict:
        return {"config": self.config.to_json(),
                "corpus": {k: v for k, v in self.corpus.describe().items() if k != "held_out"},
                "captions": {"file": str(Path(self.config.captions).resolve()), "frames": len(self.captions),
                             "uncaptioned": self.uncaptioned}}

    def build_model(self):
        from engine.models.sd_controlnet import CCISControlNetModel

        if self.config.controlnet_from:
            model = CCISControlNetModel.from_pretrained(self.config.controlnet_from, local_files_only=True)
            switches = (bool(model.config.blur_mask_weighting), bool(model.config.text_aware_attention))
            if switches != (self.config.blur_mask_weighting, self.config.text_aware_attention):
                raise InputError(f"{self.config.controlnet_from}: built with blur weighting {switches[0]}, text-aware "
                                 f"attention {switches[1]}; this run asks for {self.config.blur_mask_weighting}, "
                                 f"{self.config.text_aware_attention}")
            return model
        return CCISControlNetModel.from_unet(self.unet, blur_mask_weighting=self.config.blur_mask_weighting,
                                             text_aware_attention=self.config.text_aware_attention,
                                             blur_sigma=self.config.sigma())

    def samples_per_step(self) -> int:
        return self.config.batch_size

    # ------------------------------------------------------------------ data
    def _sample(self, frame: CorpusFrame, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        size = self.config.resolution
        height, width = frame.image.shape[:2]
        mask = np.zeros((height, width), bool)
        for box, instance in zip(frame.boxes, frame.instance_masks):
            if instance is not None:
                mask |= instance
            else:
                x0, y0, x1, y1 = (int(round(v)) for v in box)
                mask[y0:y1, x0:x1] = True
        image = np.asarray(Image.fromarray(frame.image).resize((size, size), Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)) > 127
        if flip:
            image, mask = image[:, ::-1], mask[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def _tensors(self, images: list[np.ndarray], masks: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        condition = torch.from_numpy(np.stack(masks)).float()[:, None].repeat(1, 3, 1, 1)  # white = polyp, [0, 1]
        return pixels, condition

    def make_batch(self, step: int, rng: np.random.Generator) -> dict:
        images, masks, captions = [], [], []
        for _ in range(self.config.batch_size):
            frame = self.frames[int(rng.integers(len(self.frames)))]
            image, mask = self._sample(frame, bool(rng.integers(2)))
            images.append(image)
            masks.append(mask)
            captions.append("" if rng.random() < self.config.text_dropout else self.captions[frame.rel])
        pixels, condition = self._tensors(images, masks)
        return {"pixels": pixels, "condition": condition, "captions": captions}

    # ------------------------------------------------------------------ objective
    @torch.no_grad()
    def _embed(self, captions: list[str], device) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self._embedding_cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            self.text_encoder.to(device)
            for caption, embedding in zip(missing, self.text_encoder(ids.to(device))[0]):
                self._embedding_cache[caption] = embedding.to("cpu")
        return torch.stack([self._embedding_cache[c] for c in captions]).to(device)

    def _noise_pred(self, model, pixels, condition, captions, generator):
        device = pixels.device
        self.vae.to(device)
        self.unet.to(device)
        with torch.no_grad():
            distribution = self.vae.encode(pixels).latent_dist
            posterior = torch.randn(distribution.mean.shape, generator=generator).to(device)
            latents = (distribution.mean + distribution.std * posterior) * self.scaling_factor
            text = self._embed(captions, device)
        t = torch.randint(0, len(self.alphas_cumprod), (pixels.shape[0],), generator=generator)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        a = self.alphas_cumprod[t].reshape(-1, 1, 1, 1).to(device)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        down, mid = model(noisy, t.to(device), encoder_hidden_states=text, controlnet_cond=condition, return_dict=False)
        prediction = self.unet(noisy, t.to(device), encoder_hidden_states=text,
                               down_block_additional_residuals=[r.to(noisy.dtype) for r in down],
                               mid_block_additional_residual=mid.to(noisy.dtype)).sample
        return prediction, target_of(self.prediction_type, latents, noise, self.alphas_cumprod, t)

    def loss(self, model, batch, generator):
        prediction, target = self._noise_pred(model, batch["pixels"], batch["condition"], batch["captions"], generator)
        loss = F.mse_loss(prediction.float(), target.float())
        return loss, {"mse": float(loss.detach())}

    def _held_out(self, count: int) -> list[CorpusFrame]:
        held = sorted((f for f in self.corpus.held_out if f.has_polyp), key=lambda f: f.stem)
        return (held or sorted(self.frames, key=lambda f: f.stem))[:count]

    @torch.no_grad()
    def validate(self, model) -> dict[str, float]:
        """The loss on up to 4 held-out frames with their captions, fixed noise and timesteps."""
        frames = self._held_out(4)
        samples = [self._sample(f, False) for f in frames]
        pixels, condition = self._tensors([s[0] for s in samples], [s[1] for s in samples])
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(1234)
        prediction, target = self._noise_pred(model, pixels.to(device), condition.to(device),
                                              [self.captions[f.rel] for f in frames], generator)
        return {"val_loss": float(F.mse_loss(prediction.float(), target.float()))}

    # ------------------------------------------------------------------ pictures and the result
    def _pipeline(self, model):
        from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline

        pipe = StableDiffusionControlNetPipeline.from_pretrained(
            self.source, controlnet=model, unet=self.unet, vae=self.vae, text_encoder=self.text_encoder,
            tokenizer=self.tokenizer, local_files_only=True, safety_checker=None, requires_safety_checker=False)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sample_grid(self, model, step: int, path: Path) -> None:
        """Held-out frames: source | mask | generated with its caption | with a contrasting caption; DDIM, CFG."""
        from engine.fileio import save_png_atomic
        from engine.training.plots import image_grid

        frames = self._held_out(3)
        if not frames:
            return
        pipe = self._pipeline(model)
        size = self.config.resolution
        rows, labels = [], []
        for index, frame in enumerate(frames):
            image, mask = self._sample(frame, False)
            condition = Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")
            caption = self.captions[frame.rel]
            row = [image, np.asarray(condition)]
            for text in (caption, contrasting_caption(caption)):
                out = pipe(prompt=text, image=condition, height=size, width=size,
                           num_inference_steps=self.config.sample_steps, guidance_scale=self.config.sample_guidance,
                           generator=torch.Generator().manual_seed(index), output_type="np").images[0]
                row.append((out * 255).round().astype(np.uint8))
            rows.append(row)
            labels.append(frame.stem[:16])
        save_png_atomic(path, np.asarray(image_grid(rows, labels, tile=min(256, size),
                                                    header=["source", "mask", "its caption", "contrasting caption"])))

    def save_controlnet(self, model, folder: Path) -> Path:
        from engine.training.checkpoint import save_pretrained_atomically

        return save_pretrained_atomically(model, folder)


def build(options, corpus: Corpus) -> tuple[CCISControlNetTask, TrainConfig]:
    """The task and trainer settings of ``main.py train --method ccis --from SD15_DIR`` (CCIS_DEFAULTS where unset)."""
    if options.source is None:
        raise InputError("--method ccis trains on a base model: give --from SD15_DIR (a text-to-image folder), "
                         "or --preset compact --init-from MODEL_DIR (the compact base)")
    if options.captions is None:
        raise InputError("--method ccis needs --captions FILE (write one with `main.py caption --input FRAMES "
                         "--masks MASKS --out captions.csv`)")
    task_config = CCISTaskConfig(
        source=str(Path(options.source).resolve()), captions=str(Path(options.captions).resolve()),
        resolution=pick(options, "resolution", CCIS_DEFAULTS), batch_size=pick(options, "batch_size", CCIS_DEFAULTS),
        text_dropout=options.text_dropout, blur_mask_weighting=not options.no_blur_weighting,
        text_aware_attention=not options.no_text_attention, blur_sigma=options.blur_sigma,
        controlnet_from=str(Path(options.controlnet_from).resolve()) if options.controlnet_from else None,
        allow_uncaptioned=options.allow_uncaptioned, sample_steps=options.sample_steps,
    )
    return CCISControlNetTask(corpus, task_config), generator_config(options, CCIS_DEFAULTS)


def output(task: CCISControlNetTask) -> ModelOutput:
    """The ControlNet as a diffusers folder and an "sd-controlnet" bundle (with its base) carrying the model card;
    the card adds the captions and the ablation switches."""

    def export(folder: Path, bundle: Path, name: str | None, card: Path) -> Path:
        from engine.export.controlnet_export import export_controlnet_bundle
        from engine.training.model_card import attach_model_card

        export_controlnet_bundle(task.source, folder, bundle, name=name, overwrite=True)
        attach_model_card(bundle, card)
        return bundle

    figures = {"captions": task.describe()["captions"],
               "ablation": {"blur_mask_weighting": task.config.blur_mask_weighting,
                            "text_aware_attention": task.config.text_aware_attention}}
    return ModelOutput("controlnet", "ControlNet folder", task.save_controlnet, export, figures)


ENTRY = TaskEntry(build, output)
