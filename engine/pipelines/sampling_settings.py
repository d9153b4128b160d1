"""A job's sampling settings (steps, guidance, scheduler) with a bundle's defaults filled in, checked: one resolver
for the pipeline that samples and for the job's up-front checks (engine.jobs.frame_work.check_bundle_fits), so the
two never disagree on what a job will run."""

from __future__ import annotations

from typing import Mapping

from engine.errors import InputError
from engine.schedulers import SCHEDULER_NAMES


def resolve_sampling(defaults: Mapping, steps: int | None, guidance_scale: float | None, scheduler: str | None,
                     batch_size: int = 1) -> tuple[int, float, str]:
    """Steps, guidance scale and scheduler: each as asked, else the bundle's (its manifest's "sampling")."""
    steps = int(defaults["steps"] if steps is None else steps)
    guidance_scale = float(defaults["guidance_scale"] if guidance_scale is None else guidance_scale)
    scheduler = defaults["scheduler"] if scheduler is None else scheduler
    if scheduler not in SCHEDULER_NAMES:
        raise InputError(f"scheduler {scheduler!r} is not one of {', '.join(SCHEDULER_NAMES)}")
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    return steps, guidance_scale, scheduler
