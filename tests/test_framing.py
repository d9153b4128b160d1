"""Frame ↔ working size, mask geometry and paste-back."""

from __future__ import annotations

import numpy as np
import pytest

from engine.masks.geometry import binarize, feather_alpha, nearest_resize_like_torch
from engine.pipelines.framing import choose_working_size, paste_back


@pytest.mark.parametrize("size", [(560, 480), (1920, 1080), (332, 487), (512, 512), (64, 2000)])
def test_working_size_is_a_multiple_keeps_aspect_and_pixel_budget(size):
    width, height = size
    work_w, work_h = choose_working_size(width, height, target=512, multiple=64)
    assert work_w % 64 == 0 and work_h % 64 == 0
    if min(width, height) * 512 / max(width, height) > 128:  # not an extreme strip
        assert abs(np.log((work_w / work_h) / (width / height))) < 0.15
        assert 0.7 < (work_w * work_h) / 512**2 < 1.35
    assert choose_working_size(512, 512, 512, 64) == (512, 512)


@pytest.mark.parametrize("shape,out", [((64, 48), (8, 6)), ((50, 37), (7, 5)), ((8, 8), (16, 16))])
def test_nearest_resize_equals_torch(shape, out):
    import torch

    rng = np.random.default_rng(0)
    mask = (rng.random(shape) > 0.5).astype(np.float32)[None, None]
    expected = torch.nn.functional.interpolate(torch.from_numpy(mask), size=out).numpy()
    assert np.array_equal(nearest_resize_like_torch(mask, *out), expected)


def test_binarize_handles_noisy_jpeg_masks_and_colour():
    noisy = np.array([[0, 3, 126, 127], [128, 200, 252, 255]], dtype=np.uint8)
    assert binarize(noisy).tolist() == [[False, False, False, False], [True, True, True, True]]
    rgb = np.stack([noisy] * 3, axis=2)
    assert np.array_equal(binarize(rgb), binarize(noisy))
    assert binarize(np.array([[0.2, 0.7]])).tolist() == [[False, True]]
    assert binarize(np.array([[0, 1]], dtype=np.uint8)).tolist() == [[False, True]]


def test_feather_is_zero_outside_one_inside_and_keeps_thin_masks():
    mask = np.zeros((100, 100), bool)
    mask[20:80, 30:70] = True
    alpha = feather_alpha(mask, 6)
    assert alpha[~mask].max() == 0.0
    assert alpha[50, 50] == pytest.approx(1.0, abs=1e-3)
    assert 0.0 < alpha[20, 50] < 0.6  # ramps down towards the edge
    thin = np.zeros((50, 50), bool)
    thin[10:40, 25] = True
    assert feather_alpha(thin, 6)[thin].min() == 1.0


def test_paste_back_changes_only_masked_pixels():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    mask = np.zeros((90, 120), bool)
    mask[30:60, 40:90] = True
    generated = rng.random((64, 96, 3), dtype=np.float32)  # working size differs from the frame
    out = paste_back(frame, generated, mask, feather_px=3)
    assert np.array_equal(out[~mask], frame[~mask])
    assert (out[mask] != frame[mask]).mean() > 0.9
