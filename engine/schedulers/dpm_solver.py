"""Multistep DPM-Solver(++) in numpy, reproducing diffusers 0.39.0 ``DPMSolverMultistepScheduler``."""

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
    exp32,
    log32,
    reject_truthy,
    require_choice,
    resolve_config,
    sqrt32,
    timestep_as_int,
    to_float32_array,
)

#: ``DPMSolverMultistepScheduler.__init__`` parameters and their defaults in diffusers 0.39.0.
DPM_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "solver_order": 2,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
    "algorithm_type": "dpmsolver++",
    "solver_type": "midpoint",
    "lower_order_final": True,
    "euler_at_final": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "flow_shift": 1.0,
    "final_sigmas_type": "zero",
    "lambda_min_clipped": -float("inf"),
    "variance_type": None,
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
    "use_dynamic_shifting": False,
    "time_shift_type": "exponential",
}

ALGORITHM_TYPES = ("dpmsolver++", "dpmsolver")
SOLVER_TYPES = ("midpoint", "heun")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")


def _sigma_to_alpha_sigma_t(sigma: np.float32) -> tuple[np.float32, np.float32]:
    """VP conversion sigma -> (alpha_t, sigma_t) = (1/sqrt(sigma²+1), sigma·alpha_t), in float32 like diffusers."""
    alpha_t = F32(1.0) / sqrt32(sigma * sigma + F32(1.0))
    return alpha_t, sigma * alpha_t


def _lambda(alpha_t: np.float32, sigma_t: np.float32) -> np.float32:
    """Half log-SNR ``log(alpha_t) - log(sigma_t)`` (``+inf`` when sigma_t is 0)."""
    return log32(alpha_t) - log32(sigma_t)


def _sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timesteps for ``sigmas`` by interpolating in log-sigma space.

    Mirrors ``EulerDiscreteScheduler._sigma_to_t`` (used by DPM-Solver's Karras schedule),
    vectorised over the sigmas with the same numpy dtypes (``log_sigmas`` float32).
    """
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low_idx = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low = log_sigmas[low_idx]
    high = log_sigmas[high_idx]
    w = np.clip((low - log_sigma) / (low - high), 0, 1)
    t = (1 - w) * low_idx + w * high_idx
    return t.reshape(sigmas.shape)


class DPMSolverMultistepScheduler(SchedulerBase):
    """numpy twin of ``diffusers.DPMSolverMultistepScheduler`` (deterministic variants).

    Built like ``DPMSolverMultistepScheduler.from_config(config)``: shared keys of the config
    (beta schedule, ``prediction_type``, ``timestep_spacing``, ``steps_offset``, ...) are kept and
    DPM-specific keys missing from it take DPM's defaults (``solver_order=2``,
    ``algorithm_type="dpmsolver++"``, ``lower_order_final=True``, ...).

    Supported: ``algorithm_type`` dpmsolver++ / dpmsolver (and "deis", which diffusers maps to
    dpmsolver++), ``solver_order`` 1/2/3, ``solver_type`` midpoint/heun (diffusers maps
    logrho/bh1/bh2 to midpoint), ``lower_order_final``, ``euler_at_final``,
    ``final_sigmas_type`` zero/sigma_min, ``use_karras_sigmas``, ``lambda_min_clipped``,
    ``rescale_betas_zero_snr`` and every timestep spacing.

    Not supported (``ValueError`` naming the option): the stochastic ``sde-dpmsolver(++)``
    algorithms, ``thresholding``, learned ``variance_type``, ``use_exponential_sigmas``,
    ``use_beta_sigmas``, ``use_lu_lambdas``, ``use_flow_sigmas`` and ``prediction_type="flow_prediction"``.
    Accepted but without effect here, as in diffusers when the options above are off:
    ``flow_shift``, ``use_dynamic_shifting``, ``time_shift_type`` (only used with flow sigmas / a
    ``mu`` argument), ``dynamic_thresholding_ratio`` and ``sample_max_value`` (thresholding only),
    and a ``variance_type`` other than learned/learned_range.

    Degenerate diffusers configs are reproduced, not repaired: ``use_karras_sigmas`` with
    ``final_sigmas_type="sigma_min"`` repeats the last sigma, so a final Heun or third-order step
    divides 0 by 0 and yields NaN in diffusers and here alike.

    State: the last ``solver_order`` converted model outputs, a counter of lower-order warm-up
    steps and the step index; all are reset by :meth:`set_timesteps`.  As in diffusers the step
    index is looked up from the first ``timestep`` passed to :meth:`step` (or set with
    :meth:`set_begin_index`) and then simply advances by one per call.
    """

    def __init__(self, config: Mapping[str, Any] | None = None):
        params, hidden = resolve_config(config, DPM_DEFAULTS)
        params["num_train_timesteps"] = as_int("num_train_timesteps", params["num_train_timesteps"])
        params["steps_offset"] = as_int("steps_offset", params["steps_offset"])
        if params["num_train_timesteps"] < 2:
            raise ValueError(f"unsupported scheduler option num_train_timesteps={params['num_train_timesteps']!r}")

        # Options that change the maths but are not implemented here.
        reject_truthy("thresholding", params["thresholding"], "dynamic thresholding")
        reject_truthy("use_exponential_sigmas", params["use_exponential_sigmas"])
        reject_truthy("use_beta_sigmas", params["use_beta_sigmas"])
        reject_truthy("use_lu_lambdas", params["use_lu_lambdas"])
        reject_truthy("use_flow_sigmas", params["use_flow_sigmas"])
        if params["variance_type"] in ("learned", "learned_range"):
            raise ValueError(
                f"unsupported scheduler option variance_type={params['variance_type']!r}: "
                "models predicting their variance are not supported"
            )
        if params["algorithm_type"] in ("sde-dpmsolver", "sde-dpmsolver++"):
            raise ValueError(
                f"unsupported scheduler option algorithm_type={params['algorithm_type']!r}: "
                "the stochastic (SDE) DPM-Solver needs injected noise; use 'dpmsolver++'"
            )
        require_choice("algorithm_type", params["algorithm_type"], ALGORITHM_TYPES + ("deis",))
        require_choice("final_sigmas_type", params["final_sigmas_type"], FINAL_SIGMAS_TYPES)
        # diffusers checks the *given* algorithm_type here, so "deis" needs final_sigmas_type="sigma_min".
        if params["algorithm_type"] != "dpmsolver++" and params["final_sigmas_type"] == "zero":
            raise ValueError(
                f"unsupported scheduler option final_sigmas_type='zero' with algorithm_type="
                f"{params['algorithm_type']!r} (diffusers rejects it too); use final_sigmas_type='sigma_min'"
            )
        if params["algorithm_type"] == "deis":  # diffusers re-registers this as dpmsolver++
            params["algorithm_type"] = "dpmsolver++"
        if params["solver_type"] in ("logrho", "bh1", "bh2"):  # diffusers maps these to midpoint
            params["solver_type"] = "midpoint"
        require_choice("solver_type", params["solver_type"], SOLVER_TYPES)
        params["solver_order"] = as_int("solver_order", params["solver_order"])
        require_choice("solver_order", params["solver_order"], (1, 2, 3))
        require_choice("prediction_type", params["prediction_type"], PREDICTION_TYPES)
        require_choice("timestep_spacing", params["timestep_spacing"], TIMESTEP_SPACINGS)
        params["lambda_min_clipped"] = float(params["lambda_min_clipped"])
        self.config = params
        # diffusers' Karras conversion reads config.sigma_min / config.sigma_max when a config
        # from another scheduler class (e.g. Euler, EDM) carried them along.
        self._karras_sigma_min = hidden.get("sigma_min")
        self._karras_sigma_max = hidden.get("sigma_max")

        betas = betas_from_config(params)
        self.betas = betas
        self.alphas = F32(1.0) - betas
        alphas_cumprod = alphas_cumprod_from_betas(betas)
        if params["rescale_betas_zero_snr"]:
            # diffusers: close to 0 without being 0, so the first sigma is finite.
            alphas_cumprod[-1] = F32(2.0**-24)
        self.alphas_cumprod = alphas_cumprod

        alpha_t = np.sqrt(alphas_cumprod)
        sigma_t = np.sqrt(F32(1.0) - alphas_cumprod)
        with np.errstate(divide="ignore"):
            log_alpha = np.log(alpha_t.astype(np.float64)).astype(np.float32)
            log_sigma = np.log(sigma_t.astype(np.float64)).astype(np.float32)
        # half log-SNR per training timestep; only used for lambda_min_clipped.
        self.lambda_t = log_alpha - log_sigma
        # ((1 - a) / a) ** 0.5 in float32: the full training sigma schedule.
        self.train_sigmas = np.sqrt((F32(1.0) - alphas_cumprod) / alphas_cumprod)

        self.num_inference_steps = None
        self.timesteps = np.linspace(0, params["num_train_timesteps"] - 1, params["num_train_timesteps"])[::-1].astype(np.int64)
        self.sigmas = self.train_sigmas.copy()
        self._reset_state()

    # ------------------------------------------------------------------------------------
    # schedule
    # ------------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.model_outputs: list[np.ndarray | None] = [None] * self.config["solver_order"]
        self.lower_order_nums = 0
        self._step_index: int | None = None
        self._begin_index: int | None = None

    @property
    def step_index(self) -> int | None:
        """Index of the current timestep in :attr:`timesteps` (None before the first step)."""
        return self._step_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start stepping at ``timesteps[begin_index]`` (diffusers' ``set_begin_index``, used by img2img)."""
        self._begin_index = int(begin_index)

    def _spaced_timesteps(self, steps: int) -> np.ndarray:
        """Timesteps for the configured spacing, as in ``DPMSolverMultistepScheduler.set_timesteps``.

        ``lambda_min_clipped`` first cuts off the noisiest training timesteps (those whose half
        log-SNR is below it); then ``linspace``/``leading`` choose ``steps + 1`` points and drop the
        last, ``trailing`` counts down from the cut-off in strides of ``T / steps``.
        """
        total = self.config["num_train_timesteps"]
        ascending_lambdas = self.lambda_t[::-1].astype(np.float64)
        clipped_idx = int(np.searchsorted(ascending_lambdas, self.config["lambda_min_clipped"], side="left"))
        last_timestep = total - clipped_idx
        spacing = self.config["timestep_spacing"]
        if spacing == "linspace":
            return np.linspace(0, last_timestep - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
        if spacing == "leading":
            step_ratio = last_timestep // (steps + 1)
            timesteps = (np.arange(0, steps + 1) * step_ratio).round()[::-1][:-1].copy().astype(np.int64)
            return timesteps + self.config["steps_offset"]
        step_ratio = total / steps  # trailing
        return np.arange(last_timestep, 0, -step_ratio).round().copy().astype(np.int64) - 1

    def _karras_sigmas(self, descending_sigmas: np.ndarray, steps: int) -> np.ndarray:
        """Karras et al. (2022) rho=7 schedule between sigma_max and sigma_min (float64)."""
        sigma_min = self._karras_sigma_min if self._karras_sigma_min is not None else float(descending_sigmas[-1])
        sigma_max = self._karras_sigma_max if self._karras_sigma_max is not None else float(descending_sigmas[0])
        rho = 7.0
        ramp = np.linspace(0, 1, steps)
        min_inv_rho = sigma_min ** (1 / rho)
        max_inv_rho = sigma_max ** (1 / rho)
        return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Build ``timesteps`` (int64) and ``sigmas`` (float32, one longer) and reset the solver state.

        Mirrors diffusers: sigmas are interpolated from the training sigmas at the chosen
        timesteps (or, with ``use_karras_sigmas``, follow the Karras schedule and the timesteps are
        the rounded log-sigma interpolation of them); the appended final sigma is 0
        (``final_sigmas_type="zero"``) or the smallest training sigma (``"sigma_min"``).
        """
        steps = check_num_inference_steps(num_inference_steps, self.config["num_train_timesteps"])
        timesteps = self._spaced_timesteps(steps)

        sigmas = self.train_sigmas
        log_sigmas = np.log(sigmas)
        if self.config["use_karras_sigmas"]:
            sigmas = self._karras_sigmas(np.flip(sigmas).copy(), steps)
            timesteps = _sigma_to_t(sigmas, log_sigmas)
            if self.config["beta_schedule"] != "squaredcos_cap_v2":
                timesteps = timesteps.round()
        else:
            sigmas = np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)

        if self.config["final_sigmas_type"] == "sigma_min":
            a0 = self.alphas_cumprod[0]
            sigma_last = sqrt32((F32(1.0) - a0) / a0)
        else:
            sigma_last = 0.0
        self.sigmas = np.concatenate([sigmas, [sigma_last]]).astype(np.float32)
        self.timesteps = np.asarray(timesteps).astype(np.int64)
        self.num_inference_steps = len(self.timesteps)
        self._reset_state()

    def _index_for_timestep(self, timestep: int) -> int:
        """diffusers' ``index_for_timestep``: the 2nd match if the timestep repeats, the last index if absent."""
        candidates = np.flatnonzero(self.timesteps == timestep)
        if len(candidates) == 0:
            return len(self.timesteps) - 1
        if len(candidates) > 1:
            return int(candidates[1])
        return int(candidates[0])

    # ------------------------------------------------------------------------------------
    # solver
    # ------------------------------------------------------------------------------------

    def _convert_model_output(self, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """Turn the network output into x0 (dpmsolver++) or epsilon (dpmsolver) at the current sigma."""
        prediction_type = self.config["prediction_type"]
        alpha_t, sigma_t = _sigma_to_alpha_sigma_t(self.sigmas[self._step_index])
        if self.config["algorithm_type"] == "dpmsolver++":
            if prediction_type == "epsilon":
                return (sample - sigma_t * model_output) / alpha_t
            if prediction_type == "sample":
                return model_output
            return alpha_t * sample - sigma_t * model_output  # v_prediction
        if prediction_type == "epsilon":
            return model_output
        if prediction_type == "sample":
            return (sample - alpha_t * model_output) / sigma_t
        return alpha_t * model_output + sigma_t * sample  # v_prediction

    def _alpha_sigma_lambda(self, index: int) -> tuple[np.float32, np.float32, np.float32]:
        alpha, sigma = _sigma_to_alpha_sigma_t(self.sigmas[index])
        return alpha, sigma, _lambda(alpha, sigma)

    def _first_order_update(self, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """DPM-Solver(++) first order step (equivalent to DDIM)."""
        i = self._step_index
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(i + 1)
        alpha_s, sigma_s, lambda_s = self._alpha_sigma_lambda(i)
        h = lambda_t - lambda_s
        one = F32(1.0)
        if self.config["algorithm_type"] == "dpmsolver++":
            return (sigma_t / sigma_s) * sample - (alpha_t * (exp32(-h) - one)) * model_output
        return (alpha_t / alpha_s) * sample - (sigma_t * (exp32(h) - one)) * model_output

    def _second_order_update(self, sample: np.ndarray) -> np.ndarray:
        """Multistep second order step (midpoint or Heun) from the last two converted outputs."""
        i = self._step_index
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(i + 1)
        alpha_s0, sigma_s0, lambda_s0 = self._alpha_sigma_lambda(i)
        _alpha_s1, _sigma_s1, lambda_s1 = self._alpha_sigma_lambda(i - 1)
        m0, m1 = self.model_outputs[-1], self.model_outputs[-2]
        one, half = F32(1.0), F32(0.5)

        h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
        r0 = h_0 / h
        d0, d1 = m0, (one / r0) * (m0 - m1)
        heun = self.config["solver_type"] == "heun"
        if self.config["algorithm_type"] == "dpmsolver++":
            em1 = exp32(-h) - one
            if heun:
                return (sigma_t / sigma_s0) * sample - (alpha_t * em1) * d0 + (alpha_t * (em1 / h + one)) * d1
            return (sigma_t / sigma_s0) * sample - (alpha_t * em1) * d0 - half * (alpha_t * em1) * d1
        ep1 = exp32(h) - one
        if heun:
            return (alpha_t / alpha_s0) * sample - (sigma_t * ep1) * d0 - (sigma_t * (ep1 / h - one)) * d1
        return (alpha_t / alpha_s0) * sample - (sigma_t * ep1) * d0 - half * (sigma_t * ep1) * d1

    def _third_order_update(self, sample: np.ndarray) -> np.ndarray:
        """Multistep third order step from the last three converted outputs."""
        i = self._step_index
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(i + 1)
        alpha_s0, sigma_s0, lambda_s0 = self._alpha_sigma_lambda(i)
        _a1, _s1, lambda_s1 = self._alpha_sigma_lambda(i - 1)
        _a2, _s2, lambda_s2 = self._alpha_sigma_lambda(i - 2)
        m0, m1, m2 = self.model_outputs[-1], self.model_outputs[-2], self.model_outputs[-3]
        one, half = F32(1.0), F32(0.5)

        h, h_0, h_1 = lambda_t - lambda_s0, lambda_s0 - lambda_s1, lambda_s1 - lambda_s2
        r0, r1 = h_0 / h, h_1 / h
        d0 = m0
        d1_0, d1_1 = (one / r0) * (m0 - m1), (one / r1) * (m1 - m2)
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (one / (r0 + r1)) * (d1_0 - d1_1)
        h_sq = h * h
        if self.config["algorithm_type"] == "dpmsolver++":
            em1 = exp32(-h) - one
            return (
                (sigma_t / sigma_s0) * sample
                - (alpha_t * em1) * d0
                + (alpha_t * (em1 / h + one)) * d1
                - (alpha_t * ((exp32(-h) - one + h) / h_sq - half)) * d2
            )
        ep1 = exp32(h) - one
        return (
            (alpha_t / alpha_s0) * sample
            - (sigma_t * ep1) * d0
            - (sigma_t * (ep1 / h - one)) * d1
            - (sigma_t * ((exp32(h) - one - h) / h_sq - half)) * d2
        )

    def step(self, model_output: np.ndarray, timestep: Any, sample: np.ndarray) -> np.ndarray:
        """One multistep DPM-Solver update; returns the float32 ``prev_sample``.

        Order selection mirrors diffusers: first order for ``solver_order=1``, for the first step
        and for the last step when ``euler_at_final``, ``final_sigmas_type="zero"`` or
        (``lower_order_final`` and fewer than 15 steps); at most second order for the second step,
        and for the second-to-last step under ``lower_order_final`` with fewer than 15 steps.
        """
        if self.num_inference_steps is None:
            raise ValueError("Number of inference steps is None: call set_timesteps() before step()")
        model_output = to_float32_array("model_output", model_output)
        sample = to_float32_array("sample", sample)
        if self._step_index is None:
            if self._begin_index is None:
                self._step_index = self._index_for_timestep(timestep_as_int(timestep))
            else:
                self._step_index = self._begin_index
        n = len(self.timesteps)
        if self._step_index >= n:
            raise ValueError(f"step() called more often than the {n} scheduled timesteps; call set_timesteps() again")

        cfg = self.config
        short_schedule = cfg["lower_order_final"] and n < 15
        lower_order_final = self._step_index == n - 1 and (
            cfg["euler_at_final"] or short_schedule or cfg["final_sigmas_type"] == "zero"
        )
        lower_order_second = self._step_index == n - 2 and short_schedule

        converted = self._convert_model_output(model_output, sample)
        for k in range(cfg["solver_order"] - 1):
            self.model_outputs[k] = self.model_outputs[k + 1]
        self.model_outputs[-1] = converted

        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if cfg["solver_order"] == 1 or self.lower_order_nums < 1 or lower_order_final:
                prev_sample = self._first_order_update(converted, sample)
            elif cfg["solver_order"] == 2 or self.lower_order_nums < 2 or lower_order_second:
                prev_sample = self._second_order_update(sample)
            else:
                prev_sample = self._third_order_update(sample)

        if self.lower_order_nums < cfg["solver_order"]:
            self.lower_order_nums += 1
        self._step_index += 1
        return np.asarray(prev_sample, dtype=np.float32)
