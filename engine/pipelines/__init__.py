"""Pipelines that run bundles without torch: inpainting (sd-inpaint: Polyp-Gen; pixel-inpaint: the compact
model; pixel-controlnet: the compact model + a compact CCIS ControlNet, prompted with a clinical caption) and
ControlNet generation (sd-controlnet: CCIS-Diff on SD-1.5).

``open_pipeline`` is the one way in: it reads the bundle once and opens the pipeline of its kind. (The pipeline
modules are imported there, not here: importing engine.pipelines.framing or .blending stays free of onnxruntime.)
"""

from __future__ import annotations

import os

from engine.bundle import Bundle, read_bundle
from engine.errors import BundleError

INPAINTING_KINDS = ("sd-inpaint", "pixel-inpaint", "pixel-controlnet")  # paint a masked region into a frame
PIPELINE_KINDS = (*INPAINTING_KINDS, "sd-controlnet")
PURPOSES = ("generate", "inpaint")


def pipeline_class(kind: str):
    """The pipeline class that runs bundles of ``kind``, one of PIPELINE_KINDS."""
    if kind == "sd-inpaint":
        from engine.pipelines.inpaint import InpaintPipeline

        return InpaintPipeline
    if kind == "pixel-inpaint":
        from engine.pipelines.compact import CompactInpaintPipeline

        return CompactInpaintPipeline
    if kind == "pixel-controlnet":
        from engine.pipelines.compact_controlnet import CompactControlNetPipeline

        return CompactControlNetPipeline
    if kind == "sd-controlnet":
        from engine.pipelines.controlnet import ControlNetPipeline

        return ControlNetPipeline
    raise ValueError(f"kind {kind!r} is not one of {', '.join(PIPELINE_KINDS)}")


def open_pipeline(source: str | os.PathLike[str] | Bundle, provider: str = "auto", threads: int | None = None,
                  verify_hashes: bool = True, purpose: str = "generate"):
    """The pipeline of a bundle's kind: sd-inpaint → InpaintPipeline, pixel-inpaint → CompactInpaintPipeline,
    pixel-controlnet → CompactControlNetPipeline, sd-controlnet → ControlNetPipeline (the same ``prepare_frame`` /
    ``generate_variants`` contract). ``source`` is a bundle folder or name, read here (every file's sha256 checked
    unless ``verify_hashes`` is False), or a Bundle a caller has read already; either way it is read once.

    ``purpose="inpaint"``: the caller paints a masked region into a frame (``main.py inpaint``, the retrieval
    database's polyp remover), which an sd-controlnet bundle does not do. BundleError naming the bundle.json for a
    kind that cannot serve the purpose."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r} is not one of {', '.join(PURPOSES)}")
    bundle = source if isinstance(source, Bundle) else read_bundle(source, verify_hashes=verify_hashes)
    kinds = INPAINTING_KINDS if purpose == "inpaint" else PIPELINE_KINDS
    if bundle.kind not in kinds:
        what = "an inpainting bundle" if purpose == "inpaint" else "a generation bundle"
        raise BundleError(bundle.root / "bundle.json", f"kind {bundle.kind!r} is not {what} (one of {', '.join(kinds)})")
    return pipeline_class(bundle.kind).from_bundle(bundle, provider=provider, threads=threads)
