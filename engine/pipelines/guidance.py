"""Guidance rules of the sampling loop (engine.pipelines.diffusion_base.denoise), numpy only: how many copies of the
latents a step predicts on and how the predictions become one — the classifier-free pair, one prediction as it is,
and rules that hold on a share of the steps only (guidance in a limited interval, Kynkäänniemi et al. 2024:
``--guidance-interval``, attribute guidance on the noisiest steps in engine.pipelines.compact)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from engine.errors import InputError


@dataclass(frozen=True)
class Guide:
    """A guidance rule of the sampling loop: ``copies`` of the latents per prediction, and how ``combine`` makes one
    prediction of the stacked outputs (the classifier-free pair, ``classifier_free``; engine.pipelines.compact's
    attribute guidance: three copies). With ``then``, the rule holds from the ``start`` to the ``until`` share of the
    steps run (0 = the noisiest; each rounded up to a whole step) and ``then`` decides the others — guidance in a
    limited interval, as in Kynkäänniemi et al. 2024."""

    copies: int
    combine: Callable[[np.ndarray], np.ndarray]
    start: float = 0.0
    until: float = 1.0
    then: "Guide | None" = None

    def at(self, step_index: int, total: int) -> "Guide":
        """The rule of step ``step_index`` (0 = the noisiest) of ``total``."""
        if self.then is None or step_index in steps_of_share(self.start, self.until, total):
            return self
        return self.then.at(step_index, total)


def steps_of_share(start: float, until: float, total: int) -> range:
    """The steps (0 = the noisiest) of ``total`` from the ``start`` to the ``until`` share, each rounded up to a whole
    step: where a rule of a limited interval holds."""
    first, end = (math.ceil(share * total - 1e-9) for share in (start, until))
    return range(first, end)


def check_interval_has_steps(interval: tuple[float, float] | None, total: int) -> None:
    """InputError when a guidance interval (A, B) holds on none of ``total`` sampling steps: it would run unguided
    while recorded as guided."""
    if interval is not None and not steps_of_share(*interval, total):
        start, end = interval
        raise InputError(f"guidance interval {start:g}-{end:g} covers none of the {total} sampling steps (each share "
                         "is rounded up to a whole step): widen it or raise the steps")


def unguided() -> Guide:
    """One prediction a step, taken as it is: the steps outside a guidance interval."""
    return Guide(1, lambda prediction: prediction)


def parse_guidance_interval(value) -> tuple[float, float] | None:
    """``--guidance-interval`` "A-B" (shares of the sampling steps, 0 = the noisiest) as (A, B) with 0 ≤ A < B ≤ 1;
    None for None or "0-1" (every step, as without it); InputError naming the value otherwise."""
    if value is None:
        return None
    parts = value if isinstance(value, (tuple, list)) else str(value).strip().split("-")
    try:
        start, end = (float(part) for part in parts)
    except (TypeError, ValueError):
        raise InputError(f"guidance interval {value!r}: give two shares of the steps as A-B, e.g. 0.3-1") from None
    if not 0.0 <= start < end <= 1.0:
        raise InputError(f"guidance interval {value!r}: needs 0 <= A < B <= 1 (shares of the steps, 0 = the noisiest)")
    return None if (start, end) == (0.0, 1.0) else (start, end)


def attribute_guidance_share(value) -> float:
    """``attribute_guidance_until`` (the share of the sampling steps, the noisiest, that attribute guidance runs on) as
    a float in (0, 1]; InputError naming the value otherwise. Job files and direct pipeline calls both ask here."""
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = math.nan
    if not 0.0 < share <= 1.0:
        raise InputError(f"attribute_guidance_until is a share of the sampling steps, in (0, 1]; got {value}")
    return share


def classifier_free(guidance_scale: float) -> Guide:
    """The classifier-free pair: [unconditional, conditional] → u + G·(c − u)."""

    def combine(noise_pred: np.ndarray) -> np.ndarray:
        uncond, cond = np.split(noise_pred, 2)
        return uncond + guidance_scale * (cond - uncond)

    return Guide(2, combine)
