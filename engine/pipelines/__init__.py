"""Pipelines that run bundles without torch: inpainting (sd-inpaint: Polyp-Gen; pixel-inpaint: the compact
model; pixel-controlnet: the compact model + a compact CCIS ControlNet, prompted with a clinical caption) and
ControlNet generation (sd-controlnet: CCIS-Diff on SD-1.5)."""

from __future__ import annotations

INPAINTING_KINDS = ("sd-inpaint", "pixel-inpaint", "pixel-controlnet")


def open_inpainting_pipeline(path, provider: str = "auto", threads: int | None = None, verify_hashes: bool = True):
    """The inpainting pipeline of a bundle's kind: sd-inpaint → InpaintPipeline, pixel-inpaint →
    CompactInpaintPipeline, pixel-controlnet → CompactControlNetPipeline (same prepare_frame / generate_variants
    contract); BundleError for other kinds."""
    from engine.bundle import read_bundle
    from engine.errors import BundleError

    kind = read_bundle(path, verify_hashes=False).kind
    if kind == "pixel-inpaint":
        from engine.pipelines.compact import CompactInpaintPipeline

        return CompactInpaintPipeline.from_bundle(path, provider=provider, threads=threads, verify_hashes=verify_hashes)
    if kind == "pixel-controlnet":
        from engine.pipelines.compact_controlnet import CompactControlNetPipeline

        return CompactControlNetPipeline.from_bundle(path, provider=provider, threads=threads, verify_hashes=verify_hashes)
    if kind == "sd-inpaint":
        from engine.pipelines.inpaint import InpaintPipeline

        return InpaintPipeline.from_bundle(path, provider=provider, threads=threads, verify_hashes=verify_hashes)
    raise BundleError(path, f"kind {kind!r} is not an inpainting bundle (one of {', '.join(INPAINTING_KINDS)})")
