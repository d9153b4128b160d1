"""Deterministic DDIM (eta = 0) in numpy, reproducing diffusers 0.39.0 ``DDIMScheduler``."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .common import (
    F32,
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    SchedulerBase,
    alphas_cumprod_from_betas,
    as_int,
    betas_from_config,
    check_num_inference_steps,
    reject_truthy,
    require_choice,
    resolve_config,
    sqrt32,
    timestep_as_int,
    to_float32_array,
)

#: ``DDIMScheduler.__init__`` parameters and their defaults in diffusers 0.39.0.
DDIM_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": True,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


class DDIMScheduler(SchedulerBase):
    """numpy twin of ``diffusers.DDIMScheduler`` restricted to ``eta=0`` (the pipeline default).

    Built from a scheduler config dict exactly like ``DDIMScheduler.from_config(config)``: the
    DDIM parameters the config names are used, all others keep DDIM's defaults (note that DDIM's
    own defaults are ``clip_sample=True``, ``set_alpha_to_one=True``, ``timestep_spacing="leading"``),
    and keys of other scheduler classes are ignored.

    Not supported (``ValueError``): ``thresholding=True``; there is no ``eta`` (DDPM-like noise),
    ``use_clipped_model_output`` or ``variance_noise``.  ``dynamic_thresholding_ratio`` and
    ``sample_max_value`` only matter with thresholding and are ignored.
    """

    def __init__(self, config: Mapping[str, Any] | None = None):
        params, _hidden = resolve_config(config, DDIM_DEFAULTS)
        params["num_train_timesteps"] = as_int("num_train_timesteps", params["num_train_timesteps"])
        params["steps_offset"] = as_int("steps_offset", params["steps_offset"])
        if params["num_train_timesteps"] < 1:
            raise ValueError(f"unsupported scheduler option num_train_timesteps={params['num_train_timesteps']!r}")
        require_choice("prediction_type", params["prediction_type"], PREDICTION_TYPES)
        require_choice("timestep_spacing", params["timestep_spacing"], TIMESTEP_SPACINGS)
        reject_truthy("thresholding", params["thresholding"], "dynamic thresholding")
        self.config = params

        betas = betas_from_config(params)
        self.betas = betas
        self.alphas = F32(1.0) - betas
        self.alphas_cumprod = alphas_cumprod_from_betas(betas)
        # diffusers: alpha product used when the "previous" timestep falls below 0.
        self.final_alpha_cumprod = F32(1.0) if params["set_alpha_to_one"] else F32(self.alphas_cumprod[0])
        self._clip_sample = bool(params["clip_sample"])
        self._clip_range = F32(params["clip_sample_range"])

        self.num_inference_steps = None
        self.timesteps = np.arange(0, params["num_train_timesteps"])[::-1].copy().astype(np.int64)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Discrete timesteps for sampling; mirrors ``DDIMScheduler.set_timesteps`` for each spacing.

        * ``linspace``: ``round(linspace(0, T-1, n))`` reversed.
        * ``leading``: ``arange(n) * (T // n)`` reversed, plus ``steps_offset``.
        * ``trailing``: ``round(arange(T, 0, -T/n)) - 1`` (can hold n+1 entries, as in diffusers,
          when T/n is not exact).
        """
        total = self.num_train_timesteps
        steps = check_num_inference_steps(num_inference_steps, total)
        self.num_inference_steps = steps
        spacing = self.config["timestep_spacing"]
        if spacing == "linspace":
            timesteps = np.linspace(0, total - 1, steps).round()[::-1].copy().astype(np.int64)
        elif spacing == "leading":
            step_ratio = total // steps
            timesteps = (np.arange(0, steps) * step_ratio).round()[::-1].copy().astype(np.int64)
            timesteps += self.config["steps_offset"]
        else:  # trailing
            step_ratio = total / steps
            timesteps = np.round(np.arange(total, 0, -step_ratio)).astype(np.int64)
            timesteps -= 1
        self.timesteps = timesteps

    def set_begin_index(self, begin_index: int = 0) -> None:
        """No-op: DDIM looks every step up from its ``timestep``.  Present so pipelines can call it on any scheduler."""

    def step(self, model_output: np.ndarray, timestep: Any, sample: np.ndarray) -> np.ndarray:
        """One DDIM update x_t -> x_{t-Δ} (DDIM paper eq. 12 with σ_t = 0); returns float32 ``prev_sample``.

        Like diffusers, the "previous" timestep is always ``timestep - T // num_inference_steps``
        (whatever the spacing), and when it is negative ``final_alpha_cumprod`` is used.
        """
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is None: call set_timesteps() before step()")
        model_output = to_float32_array("model_output", model_output)
        sample = to_float32_array("sample", sample)
        t = timestep_as_int(timestep)
        prev_t = t - self.num_train_timesteps // self.num_inference_steps

        alpha_prod_t = F32(self.alphas_cumprod[t])
        alpha_prod_t_prev = F32(self.alphas_cumprod[prev_t]) if prev_t >= 0 else self.final_alpha_cumprod
        beta_prod_t = F32(1.0) - alpha_prod_t
        sqrt_alpha_t = sqrt32(alpha_prod_t)
        sqrt_beta_t = sqrt32(beta_prod_t)

        prediction_type = self.config["prediction_type"]
        with np.errstate(divide="ignore", invalid="ignore"):
            if prediction_type == "epsilon":
                pred_original = (sample - sqrt_beta_t * model_output) / sqrt_alpha_t
                pred_epsilon = model_output
            elif prediction_type == "sample":
                pred_original = model_output
                pred_epsilon = (sample - sqrt_alpha_t * pred_original) / sqrt_beta_t
            else:  # v_prediction
                pred_original = sqrt_alpha_t * sample - sqrt_beta_t * model_output
                pred_epsilon = sqrt_alpha_t * model_output + sqrt_beta_t * sample

        if self._clip_sample:
            pred_original = np.clip(pred_original, -self._clip_range, self._clip_range)

        # eta = 0: std_dev_t = 0, so the direction term is sqrt(1 - alpha_prod_t_prev) * eps.
        direction = sqrt32(F32(1.0) - alpha_prod_t_prev) * pred_epsilon
        prev_sample = sqrt32(alpha_prod_t_prev) * pred_original + direction
        return np.asarray(prev_sample, dtype=np.float32)
