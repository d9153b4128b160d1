"""Helpers for tests that drive a pipeline directly: a prepared random frame with its noise, and a record of what
the U-Net is fed call by call (the real ONNX session still runs)."""

from __future__ import annotations

from typing import Callable

import numpy as np


def prepared_random_frame(pipe, seed: int = 4, size: tuple[int, int] = (80, 100),
                          box: tuple[int, int, int, int] = (30, 50, 40, 66)):
    """(prepared frame, one variant's initial noise at its working size): a random uint8 frame of ``size`` (h, w)
    with the mask ``box`` (top, bottom, left, right), prepared by ``pipe``."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    mask = np.zeros(size, bool)
    top, bottom, left, right = box
    mask[top:bottom, left:right] = True
    prepared = pipe.prepare_frame(frame, mask)
    w, h = prepared.working_size
    return prepared, rng.standard_normal((1, 3, h, w)).astype(np.float32)


def record_unet_feeds(monkeypatch, pipe, pick: Callable[[dict], object]) -> list:
    """A list that gets ``pick(feeds)`` of every U-Net call ``pipe`` makes from now on (clear it between runs)."""
    fed: list = []
    real_run = pipe.timed_run

    def recording_run(stage, part, outputs, feeds):
        if stage == "unet":
            fed.append(pick(feeds))
        return real_run(stage, part, outputs, feeds)

    monkeypatch.setattr(pipe, "timed_run", recording_run)
    return fed
