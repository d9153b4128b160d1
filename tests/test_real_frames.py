"""The engine on real Kvasir-SEG frames (../shared/data, skipped when absent): native sizes, noisy JPEG
masks, paste-back exactness, removal at the padded box as Polyp-Gen samples it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import shared_data_or_skip
from engine.demo import DEMO_BUNDLE
from engine.dataset.image_reader import read_frame, read_mask
from engine.masks.instances import bbox_of, padded_box_mask
from engine.pipelines.inpaint import InpaintPipeline


@pytest.fixture(scope="module")
def demo_pipeline():
    return InpaintPipeline.from_bundle(DEMO_BUNDLE, provider="cpu")


def _real_pairs(count: int):
    root = shared_data_or_skip() / "polyps"
    images = sorted((root / "images").glob("*.jpg"))
    # Spread over the set: small and large polyps, different resolutions.
    picked = images[:: max(1, len(images) // count)][:count]
    return [(path, root / "masks" / path.name) for path in picked]


def test_real_frames_keep_every_pixel_outside_the_mask(demo_pipeline):
    for image_path, mask_path in _real_pairs(3):
        frame = read_frame(image_path)
        raw_mask = np.asarray(Image.open(mask_path))
        assert raw_mask.ndim == 3 and len(np.unique(raw_mask)) > 2  # really a noisy 3-channel JPEG mask
        mask = read_mask(mask_path)
        assert mask.shape == frame.shape[:2] and 0.01 < mask.mean() < 0.8
        region = padded_box_mask(bbox_of(mask), 15, *mask.shape)
        result = demo_pipeline(frame, region, prompt="Normal", steps=3, seed=0)
        assert result.image.shape == frame.shape
        assert np.array_equal(result.image[~region], frame[~region]), image_path.name
        assert (result.image[region] != frame[region]).any()
        work_w, work_h = result.settings["working_size"]
        assert work_w % demo_pipeline.size_multiple == 0 and work_h % demo_pipeline.size_multiple == 0
        assert abs(np.log((work_w / work_h) / (frame.shape[1] / frame.shape[0]))) < 0.15
