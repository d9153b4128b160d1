"""Torch-free diffusion schedulers for the ONNX inference path.

Two schedulers, each a numpy reproduction of its diffusers 0.39.0 counterpart configured from a
diffusers ``scheduler_config.json`` dict, the way ``<Scheduler>.from_config(config)`` would:

* ``"ddim"``  -> :class:`~engine.schedulers.ddim.DDIMScheduler` (``diffusers.DDIMScheduler``, eta = 0)
* ``"dpm++"`` -> :class:`~engine.schedulers.dpm_solver.DPMSolverMultistepScheduler`
  (``diffusers.DPMSolverMultistepScheduler``, deterministic variants)

Usage mirrors diffusers::

    sch = make_scheduler("dpm++", config)
    sch.set_timesteps(20)
    for t in sch.timesteps:
        noise_pred = unet(sch.scale_model_input(latents, t), t, ...)
        latents = sch.step(noise_pred, t, latents)

Config options that would change the maths but are not implemented raise ``ValueError`` naming
the option; keys belonging to other scheduler classes are ignored, as ``from_config`` does.
"""

from __future__ import annotations

from typing import Any, Mapping

from .ddim import DDIMScheduler
from .dpm_solver import DPMSolverMultistepScheduler

SCHEDULER_NAMES: tuple[str, ...] = ("ddim", "dpm++")

_SCHEDULER_CLASSES = {
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
}

Scheduler = DDIMScheduler | DPMSolverMultistepScheduler


def make_scheduler(name: str, config: Mapping[str, Any] | None = None) -> Scheduler:
    """Build the scheduler called ``name`` (one of :data:`SCHEDULER_NAMES`) from a diffusers config dict.

    ``config`` is the content of a ``scheduler_config.json`` of any diffusers scheduler class;
    private keys such as ``_class_name`` and ``_diffusers_version`` are ignored.
    """
    try:
        cls = _SCHEDULER_CLASSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown scheduler {name!r}; valid names: {', '.join(SCHEDULER_NAMES)}") from None
    return cls(config)


__all__ = [
    "SCHEDULER_NAMES",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "Scheduler",
    "make_scheduler",
]
