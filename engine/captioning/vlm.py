"""``main.py caption --model VLM_DIR``: a local transformers vision-language captioning model's description
of each polyp, written in the ``vlm_text`` column beside the measured text (never instead of it).

The folder is what ``save_pretrained`` writes for an image-to-text model that its processor feeds with an
image and, optionally, a text prompt: BLIP, BLIP-2, GIT and the like (``AutoModelForImageTextToText``, else
``AutoModelForVision2Seq``). Loaded offline (``local_files_only``), weights from safetensors only (no
pickle is loaded from a curator's folder), CPU by default. Each polyp is shown to the model as a crop
around its mask (its box widened by ``CROP_PAD`` = 25 % on each side, at least ``MIN_CROP_PX`` = 64 px),
described greedily (no sampling: the same frame gives the same words) in at most ``MAX_NEW_TOKENS`` tokens.

torch and transformers are imported here only, when a model is opened: the measured captioner does not
need them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.masks.geometry import binarize
from engine.masks.instances import bbox_of, split_instances

CROP_PAD = 0.25
MIN_CROP_PX = 64
MAX_NEW_TOKENS = 40


def model_identity(folder: Path) -> str:
    """'<folder name> sha256:<12 hex>' over the folder's config and weights (hashes cached per file stat)."""
    import hashlib

    from engine.bundle.hashing import HashCache

    cache = HashCache()
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in (".json", ".safetensors", ".txt", ".model")):
            digest.update(f"{path.name}:{cache.sha256(path)}\n".encode("utf-8"))
    cache.save()
    return f"{folder.name} sha256:{digest.hexdigest()[:12]}"


def polyp_crops(frame: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """One crop of the frame per polyp (largest first, as the captioner orders them)."""
    height, width = frame.shape[:2]
    crops = []
    for polyp in split_instances(binarize(mask)):
        x, y, w, h = bbox_of(polyp)
        pad_x, pad_y = max(w * CROP_PAD, (MIN_CROP_PX - w) / 2), max(h * CROP_PAD, (MIN_CROP_PX - h) / 2)
        left, top = int(max(0, x - pad_x)), int(max(0, y - pad_y))
        right, bottom = int(min(width, x + w + pad_x)), int(min(height, y + h + pad_y))
        crops.append(np.ascontiguousarray(frame[top:bottom, left:right]))
    return crops


class VisionLanguageDescriber:
    """Open with ``open(folder)``; ``describe(frame, mask)`` → one text per polyp."""

    def __init__(self, folder: Path, processor, model, prompt: str | None, identity: str):
        self.folder = folder
        self.processor = processor
        self.model = model
        self.prompt = prompt
        self.identity = identity

    @classmethod
    def open(cls, folder: str | Path, prompt: str | None = None, threads: int | None = None) -> VisionLanguageDescriber:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InputError(f"{folder}: vision-language model folder not found")
        if not (folder / "config.json").is_file():
            raise InputError(f"{folder}: no config.json: not a transformers model folder (save_pretrained writes one)")
        if not any(folder.glob("*.safetensors")):
            raise InputError(f"{folder}: holds no .safetensors weights; PolypForge loads no pickled (.bin) weights "
                             "from a model folder: convert them with save_pretrained(safe_serialization=True)")
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise InputError(f"--model needs torch and transformers (pip install -e '.[export]'): {exc}") from None
        if threads:
            torch.set_num_threads(threads)
        try:
            processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
            model = None
            for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
                auto = getattr(transformers, name, None)
                if auto is None:
                    continue
                try:
                    model = auto.from_pretrained(folder, local_files_only=True, use_safetensors=True)
                    break
                except ValueError:  # this auto class does not know the model type: try the next
                    continue
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{folder}: cannot be loaded as a vision-language model ({exc})") from None
        if model is None:
            raise InputError(f"{folder}: its model type is not an image-to-text model transformers can generate "
                             "captions with (BLIP, BLIP-2, GIT, …)")
        model.eval()
        return cls(folder, processor, model, prompt, model_identity(folder))

    def describe_image(self, image: np.ndarray) -> str:
        import torch
        from PIL import Image

        picture = Image.fromarray(image)
        inputs = self.processor(images=picture, text=self.prompt, return_tensors="pt") if self.prompt else \
            self.processor(images=picture, return_tensors="pt")
        with torch.no_grad():
            ids = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=1)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0]
        return " ".join(text.split())

    def describe(self, frame: np.ndarray, mask: np.ndarray) -> list[str]:
        return [self.describe_image(crop) for crop in polyp_crops(frame, mask)]
