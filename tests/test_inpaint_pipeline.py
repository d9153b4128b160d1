"""The torch-free engine against diffusers' StableDiffusionInpaintPipeline, on a tiny random-weight model
exported with `main.py export`, and the engine's own promises (paste-back, determinism, sizes)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pipelines.inpaint import InpaintPipeline

# Engine raw output (float, before 8-bit rounding) vs diffusers, same weights and noise. Measured ≈ 1e-6;
# the bound leaves room for onnxruntime's graph rewrites, not for any mistake in the maths (a wrong
# timestep, mask or guidance order moves the output by > 1e-2 on this model).
RAW_TOLERANCE = 1e-4
WIDTH, HEIGHT = 128, 96  # multiples of the tiny U-Net's size step (16): no resizing on either side


def _frame_and_mask(seed: int = 3, width: int = WIDTH, height: int = HEIGHT):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    frame = np.stack(
        [128 + 80 * np.sin(xx / 9.0), 90 + 60 * np.cos(yy / 7.0), 70 + 40 * np.sin((xx + yy) / 11.0)], axis=2
    )
    frame = np.clip(frame + rng.normal(0, 8, frame.shape), 0, 255).astype(np.uint8)
    mask = ((yy - height * 0.45) / (height * 0.22)) ** 2 + ((xx - width * 0.55) / (width * 0.18)) ** 2 <= 1
    return frame, mask


def _diffusers_reference(pipeline_dir, scheduler, frame, mask, latents, generator_seed, steps, guidance):
    import torch
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionInpaintPipeline
    from PIL import Image

    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(pipeline_dir), safety_checker=None, local_files_only=True)
    scheduler_class = {"ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler}[scheduler]
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    output = pipe(
        prompt="Polyp",
        negative_prompt="",
        image=Image.fromarray(frame),
        mask_image=Image.fromarray(mask.astype(np.uint8) * 255),
        height=frame.shape[0],
        width=frame.shape[1],
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=torch.from_numpy(latents),
        generator=torch.Generator().manual_seed(generator_seed),
        output_type="np",
    )
    return output.images[0]


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return InpaintPipeline.from_bundle(tiny_bundle, provider="cpu")


@pytest.mark.parametrize("scheduler,steps,guidance", [("ddim", 12, 7.5), ("dpm++", 12, 7.5), ("dpm++", 5, 1.0)])
def test_engine_equals_diffusers(engine, tiny_pipeline_dir, scheduler, steps, guidance):
    import torch

    frame, mask = _frame_and_mask()
    latent_shape = (1, 4, HEIGHT // 8, WIDTH // 8)
    latents = torch.randn(latent_shape, generator=torch.Generator().manual_seed(11)).numpy()
    # diffusers samples the masked-image latent posterior with its generator before the loop (the first draw
    # when latents are given); the engine takes that same noise explicitly.
    generator_seed = 5
    posterior_noise = torch.randn(latent_shape, generator=torch.Generator().manual_seed(generator_seed)).numpy()

    expected = _diffusers_reference(
        tiny_pipeline_dir, scheduler, frame, mask, latents, generator_seed, steps, guidance
    )
    result = engine(
        frame,
        mask,
        prompt="Polyp",
        negative_prompt="",
        steps=steps,
        guidance_scale=guidance,
        scheduler=scheduler,
        latents=latents,
        masked_image_noise=posterior_noise,
        working_size=(WIDTH, HEIGHT),
    )
    assert result.raw.shape == expected.shape == (HEIGHT, WIDTH, 3)
    error = float(np.abs(result.raw - expected).max())
    assert error < RAW_TOLERANCE, f"engine vs diffusers max abs error {error:.3g}"
    # And the comparison is sensitive: other initial noise gives a clearly different image.
    other = engine(
        frame, mask, steps=steps, guidance_scale=guidance, scheduler=scheduler, seed=1234, working_size=(WIDTH, HEIGHT)
    )
    assert float(np.abs(other.raw - expected).max()) > 1e-2


def test_pixels_outside_the_mask_are_the_input_bytes(engine):
    frame, mask = _frame_and_mask(width=150, height=110)  # not a multiple of 16: resized both ways
    result = engine(frame, mask, steps=4, seed=0)
    assert result.image.shape == frame.shape and result.image.dtype == np.uint8
    assert np.array_equal(result.image[~mask], frame[~mask])
    assert not np.array_equal(result.image[mask], frame[mask])


def test_same_seed_same_bytes_and_other_seed_differs(engine):
    frame, mask = _frame_and_mask()
    first = engine(frame, mask, steps=4, seed=7).image
    again = engine(frame, mask, steps=4, seed=7).image
    other = engine(frame, mask, steps=4, seed=8).image
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_variants_do_not_depend_on_batch_size(engine):
    frame, mask = _frame_and_mask()
    prepared = engine.prepare_frame(frame, mask)
    one_by_one = engine.generate_variants(prepared, seeds=[1, 2, 3], steps=3, batch_size=1)
    batched = engine.generate_variants(prepared, seeds=[1, 2, 3], steps=3, batch_size=3)
    for a, b in zip(one_by_one, batched):
        assert np.abs(a.raw - b.raw).max() < 1e-5
    single = engine(frame, mask, steps=3, seed=2)
    assert np.abs(single.raw - one_by_one[1].raw).max() < 1e-5


def test_prompt_is_encoded_once_and_frame_once_for_all_variants(engine):
    frame, mask = _frame_and_mask()
    calls = {"text_encoder": 0, "vae_encoder": 0}
    run_text, vae = engine._run_text_encoder, engine.parts["vae_encoder"]
    run_vae = vae.run

    def count_text(ids):
        calls["text_encoder"] += 1
        return run_text(ids)

    def count_vae(names, feeds):
        calls["vae_encoder"] += 1
        return run_vae(names, feeds)

    engine._run_text_encoder, vae.run = count_text, count_vae
    try:
        prepared = engine.prepare_frame(frame, mask)
        engine.generate_variants(prepared, seeds=[1, 2, 3, 4], steps=2, prompt="a pale polyp")
        engine.generate_variants(prepared, seeds=[5], steps=2, prompt="a pale polyp")
        engine.generate_variants(prepared, seeds=[6], steps=2)  # the default prompt was encoded at load
    finally:
        del engine._run_text_encoder
        vae.run = run_vae
    assert calls == {"text_encoder": 1, "vae_encoder": 1}


def test_text_encoder_is_released_after_use_unless_kept(tiny_bundle):
    released = InpaintPipeline.from_bundle(tiny_bundle, provider="cpu")
    assert "text_encoder" not in released.parts
    frame, mask = _frame_and_mask()
    a = released(frame, mask, steps=2, prompt="another prompt", seed=1).raw  # loads it again, briefly
    assert "text_encoder" not in released.parts
    kept = InpaintPipeline.from_bundle(tiny_bundle, provider="cpu", keep_text_encoder=True)
    assert "text_encoder" in kept.parts
    b = kept(frame, mask, steps=2, prompt="another prompt", seed=1).raw
    assert np.array_equal(a, b)


def test_progress_and_cancel(engine):
    from engine.errors import Cancelled

    frame, mask = _frame_and_mask()
    seen = []
    engine(frame, mask, steps=5, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 5) for i in range(1, 6)]
    with pytest.raises(Cancelled):
        engine(frame, mask, steps=5, cancel=lambda: len(seen) >= 7, progress=lambda d, t: seen.append((d, t)))
    assert len(seen) == 7  # stopped within a step of being asked


def test_bad_inputs_are_named(engine):
    from engine.errors import InputError

    frame, mask = _frame_and_mask()
    with pytest.raises(InputError, match="mask is empty"):
        engine(frame, np.zeros_like(mask))
    with pytest.raises(InputError, match="mask is 10×10 but the frame is 128×96"):
        engine(frame, np.ones((10, 10), bool))
    with pytest.raises(InputError, match="scheduler 'euler'"):
        engine(frame, mask, scheduler="euler")
    with pytest.raises(InputError, match="RGB uint8"):
        engine(frame.astype(np.float32), mask)


def test_region_inpainting_equals_diffusers_on_the_crop(engine, tiny_pipeline_dir):
    """inpaint_area="region": the engine's raw output is diffusers' on the same crop (same noise), only the mask
    changes in the frame, and the crop is what the settings record."""
    import torch

    frame, _ = _frame_and_mask(width=300, height=220)
    mask = np.zeros((220, 300), bool)
    mask[60:110, 150:210] = True  # a 60×50 box: padding 18 px → a 96×96 crop, the working size as it is
    assert engine.prepare_frame(frame, mask, inpaint_area="region").working_size == (engine.image_size,) * 2
    prepared = engine.prepare_frame(frame, mask, working_size=(96, 96), inpaint_area="region", region_padding=18)
    x0, y0, x1, y1 = prepared.crop
    assert (x1 - x0, y1 - y0) == (96, 96) and x0 <= 150 and x1 >= 210 and y0 <= 60 and y1 >= 110
    latent_shape = (1, 4, 12, 12)
    latents = torch.randn(latent_shape, generator=torch.Generator().manual_seed(3)).numpy()
    posterior_noise = torch.randn(latent_shape, generator=torch.Generator().manual_seed(4)).numpy()
    (result,) = engine.generate_variants(prepared, [0], prompt="Polyp", negative_prompt="", steps=6, guidance_scale=7.5,
                                         scheduler="ddim", latents=[latents], masked_image_noise=[posterior_noise])
    expected = _diffusers_reference(tiny_pipeline_dir, "ddim", np.ascontiguousarray(frame[y0:y1, x0:x1]),
                                    mask[y0:y1, x0:x1], latents, 4, 6, 7.5)
    assert float(np.abs(result.raw - expected).max()) < RAW_TOLERANCE
    assert result.settings["inpaint_area"] == "region" and result.settings["region_crop"] == [x0, y0, x1, y1]
    assert np.array_equal(result.image[~mask], frame[~mask])
    assert not np.array_equal(result.image[mask], frame[mask])
    whole = engine(frame, mask, steps=2, seed=0)
    assert whole.settings["inpaint_area"] == "frame" and whole.settings["region_crop"] == [0, 0, 300, 220]


def test_open_pipeline_reads_the_bundle_once_and_opens_its_kind(tiny_bundle, monkeypatch):
    """engine.pipelines.open_pipeline reads (and hashes) the bundle once and hands it to the pipeline it opens."""
    import engine.pipelines
    import engine.runtime.opening
    from engine.bundle import read_bundle
    from engine.pipelines import open_pipeline

    reads = []

    def counted(path, verify_hashes=True):
        reads.append(path)
        return read_bundle(path, verify_hashes=verify_hashes)

    monkeypatch.setattr(engine.pipelines, "read_bundle", counted)
    monkeypatch.setattr(engine.runtime.opening, "read_bundle", counted)
    pipe = open_pipeline(tiny_bundle, provider="cpu", purpose="inpaint")
    assert isinstance(pipe, InpaintPipeline) and len(reads) == 1
    bundle = read_bundle(tiny_bundle)
    assert open_pipeline(bundle, provider="cpu").bundle is bundle and len(reads) == 1


def test_open_pipeline_refuses_other_kinds_naming_the_file():
    from conftest import REPO_ROOT

    from engine.errors import BundleError
    from engine.pipelines import open_pipeline

    controlnet = REPO_ROOT / "exported_models" / "demo-sd-controlnet"
    with pytest.raises(BundleError, match=r"bundle\.json: kind 'sd-controlnet' is not an inpainting bundle"):
        open_pipeline(controlnet, provider="cpu", purpose="inpaint")
    assert open_pipeline(controlnet, provider="cpu").bundle.kind == "sd-controlnet"
    with pytest.raises(BundleError, match=r"bundle\.json: kind 'dinov2' is not a generation bundle"):
        open_pipeline(REPO_ROOT / "exported_models" / "demo-dinov2", provider="cpu")
