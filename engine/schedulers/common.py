"""Shared pieces of the numpy schedulers: config resolution, beta schedules, float32 helpers.

Everything here mirrors a specific piece of diffusers 0.39.0 (``diffusers/schedulers`` and
``diffusers/configuration_utils.py``) so that the numpy schedulers reproduce the torch ones to
float32 rounding.  No torch is imported anywhere under ``engine.schedulers``.

Precision notes (why the code below looks the way it does):

* diffusers keeps ``betas``/``alphas_cumprod`` as float32 tensors, so we do too.
* ``torch.cumprod`` on CPU accumulates float32 input in float64 and rounds each partial product
  to float32; :func:`cumprod_float32` does the same (a plain float32 ``np.cumprod`` differs in
  most entries).
* ``torch.linspace(..., dtype=float32)`` uses a CPU/SIMD-width dependent formula; we use the
  float64 linspace rounded to float32, which differs from it by at most one float32 ulp on some
  entries (a relative 4e-7 on ``alphas_cumprod`` at worst) - far below the 1e-5 target.
* The per-step scalar maths of both schedulers runs on float32 0-d tensors in diffusers; we do it
  on ``np.float32`` scalars in the same operation order, with ``log``/``exp`` evaluated in float64
  and rounded (the correctly rounded float32 value that libm's ``logf``/``expf`` return).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

F32 = np.float32

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


# --------------------------------------------------------------------------------------------
# config handling
# --------------------------------------------------------------------------------------------


def resolve_config(config: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> tuple[dict, dict]:
    """Resolve a diffusers ``scheduler_config.json`` dict the way ``Scheduler.from_config`` does.

    Mirrors ``ConfigMixin.extract_init_dict``: keys listed in ``_use_default_values`` are dropped
    (they were defaults of the class that saved the config), private keys (``_class_name``,
    ``_diffusers_version``, ...) are ignored, every ``__init__`` parameter of the target class that
    the config names takes the config's value and every other parameter keeps its default.  Keys
    that belong to other scheduler classes are ignored (e.g. ``skip_prk_steps`` of PNDM, or
    ``clip_sample`` of DDIM when building a DPM-Solver).

    Returns ``(params, hidden)``: ``params`` holds exactly the keys of ``defaults``; ``hidden`` holds
    the remaining non-default config keys, which diffusers registers on ``scheduler.config`` too
    (DPM-Solver's Karras conversion reads ``sigma_min``/``sigma_max`` from there).
    """
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise TypeError(f"scheduler config must be a mapping, got {type(config).__name__}")
    used_defaults = set(config.get("_use_default_values", None) or ())
    cleaned = {k: v for k, v in config.items() if k not in used_defaults and k != "_use_default_values"}
    params = dict(defaults)
    hidden = {}
    for key, value in cleaned.items():
        if key in defaults:
            params[key] = value
        elif not key.startswith("_"):
            hidden[key] = value
    return params, hidden


def require_choice(option: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise ``ValueError`` naming ``option`` and ``value`` unless ``value`` is one of ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"unsupported scheduler option {option}={value!r}; supported values: {', '.join(map(repr, allowed))}")


def reject_truthy(option: str, value: Any, why: str = "") -> None:
    """Raise ``ValueError`` when a boolean option we do not implement is switched on."""
    if value:
        suffix = f" ({why})" if why else ""
        raise ValueError(f"unsupported scheduler option {option}={value!r}: not implemented by the numpy schedulers{suffix}")


def as_int(option: str, value: Any) -> int:
    """Integer config values (JSON may give ``1000`` or ``1000.0``); anything else is a ValueError."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"scheduler option {option}={value!r} must be an integer")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"scheduler option {option}={value!r} must be an integer") from None
    if not as_float.is_integer():
        raise ValueError(f"scheduler option {option}={value!r} must be an integer")
    return int(as_float)


def check_num_inference_steps(num_inference_steps: Any, num_train_timesteps: int) -> int:
    """Validate the ``set_timesteps`` argument: an int in ``[1, num_train_timesteps]``.

    diffusers raises for more steps than training timesteps; it fails obscurely (division by
    zero, empty schedules) for fewer than one, which we turn into a ``ValueError`` as well.
    """
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)):
        raise ValueError(f"num_inference_steps must be an integer, got {num_inference_steps!r}")
    steps = int(num_inference_steps)
    if steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
    if steps > num_train_timesteps:
        raise ValueError(
            f"num_inference_steps={steps} cannot be larger than num_train_timesteps={num_train_timesteps}"
        )
    return steps


# --------------------------------------------------------------------------------------------
# noise schedules
# --------------------------------------------------------------------------------------------


def betas_for_alpha_bar(num_diffusion_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """Glide cosine schedule (diffusers' ``betas_for_alpha_bar`` with ``alpha_transform_type="cosine"``).

    Computed in Python float64 like diffusers, then stored as float32.
    """
    return _betas_of(_cosine_alpha_bar, num_diffusion_timesteps, max_beta)


def _cosine_alpha_bar(t: float) -> float:
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def _betas_of(alpha_bar, num_diffusion_timesteps: int, max_beta: float) -> np.ndarray:
    """β_i = min(1 − ᾱ((i + 1) / N) / ᾱ(i / N), max_beta), in Python float64, stored as float32."""
    betas = []
    for i in range(num_diffusion_timesteps):
        t1 = i / num_diffusion_timesteps
        t2 = (i + 1) / num_diffusion_timesteps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.asarray(betas, dtype=np.float32)


def shifted_cosine_betas(num_diffusion_timesteps: int, shift: float, max_beta: float = 0.999) -> np.ndarray:
    """The Glide cosine schedule with its log-SNR moved down by ``2 ln(shift)`` at every t (Hoogeboom et al.,
    "simple diffusion", 2023: a model trained at ``shift`` times the resolution of the schedule's design sees the
    same signal-to-noise ratio in its ``shift``×``shift`` averaged pixels as the lower-resolution model saw in its
    pixels). ᾱ_s = ᾱ / (ᾱ + shift² (1 − ᾱ)); ``shift`` 1 gives :func:`betas_for_alpha_bar` exactly. For a
    scheduler config's ``trained_betas``."""
    if not shift > 0:
        raise ValueError(f"schedule shift must be positive, got {shift}")

    def alpha_bar(t: float) -> float:
        plain = _cosine_alpha_bar(t)
        return plain / (plain + shift * shift * (1.0 - plain))

    return _betas_of(alpha_bar, num_diffusion_timesteps, max_beta)


def make_betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: Any,
) -> np.ndarray:
    """float32 betas exactly as in ``DDIMScheduler.__init__`` / ``DPMSolverMultistepScheduler.__init__``.

    ``trained_betas`` (if not None) wins over the schedule; ``linear`` is a linspace of betas,
    ``scaled_linear`` a linspace of sqrt(beta) squared in float32, ``squaredcos_cap_v2`` the Glide
    cosine schedule.
    """
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float32).reshape(-1)
        if betas.size == 0:
            raise ValueError("unsupported scheduler option trained_betas=[]: must not be empty")
        return betas
    require_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    if beta_schedule == "linear":
        return np.linspace(float(beta_start), float(beta_end), num_train_timesteps).astype(np.float32)
    if beta_schedule == "scaled_linear":
        roots = np.linspace(float(beta_start) ** 0.5, float(beta_end) ** 0.5, num_train_timesteps).astype(np.float32)
        return roots * roots
    return betas_for_alpha_bar(num_train_timesteps)


def betas_from_config(params: Mapping[str, Any]) -> np.ndarray:
    """The training beta schedule a resolved config describes, zero-terminal-SNR rescaled when asked."""
    betas = make_betas(
        params["num_train_timesteps"],
        params["beta_start"],
        params["beta_end"],
        params["beta_schedule"],
        params["trained_betas"],
    )
    if params["rescale_betas_zero_snr"]:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def cumprod_float32(values: np.ndarray) -> np.ndarray:
    """``torch.cumprod`` of a float32 CPU tensor: float64 running product, each entry rounded to float32."""
    return np.cumprod(np.asarray(values, dtype=np.float32).astype(np.float64)).astype(np.float32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale betas to zero terminal SNR (arXiv 2305.08891, Algorithm 1), in float32 like diffusers.

    Mirrors diffusers' ``rescale_zero_terminal_snr``: shift sqrt(alphas_cumprod) so that its last
    entry is 0, scale it so its first entry is unchanged, and convert back to betas.
    """
    betas = np.asarray(betas, dtype=np.float32)
    alphas = F32(1.0) - betas
    alphas_bar_sqrt = np.sqrt(cumprod_float32(alphas))
    first = alphas_bar_sqrt[0].copy()
    last = alphas_bar_sqrt[-1].copy()
    alphas_bar_sqrt = alphas_bar_sqrt - last
    alphas_bar_sqrt = alphas_bar_sqrt * (first / (first - last))
    alphas_bar = alphas_bar_sqrt * alphas_bar_sqrt
    alphas = np.concatenate([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (F32(1.0) - alphas).astype(np.float32)


def alphas_cumprod_from_betas(betas: np.ndarray) -> np.ndarray:
    """``alphas_cumprod = cumprod(1 - betas)`` in float32, as both diffusers schedulers store it."""
    return cumprod_float32(F32(1.0) - np.asarray(betas, dtype=np.float32))


# --------------------------------------------------------------------------------------------
# float32 scalar helpers (mirroring torch's 0-d float32 tensor maths)
# --------------------------------------------------------------------------------------------


def sqrt32(x: Any) -> np.float32:
    """``tensor ** 0.5`` on a float32 0-d tensor (torch evaluates it as a correctly rounded sqrt)."""
    return np.sqrt(F32(x))


def log32(x: Any) -> np.float32:
    """``torch.log`` of a float32 scalar: the correctly rounded float32 log (``log(0) = -inf``)."""
    with np.errstate(divide="ignore"):
        return F32(np.log(np.float64(F32(x))))


def exp32(x: Any) -> np.float32:
    """``torch.exp`` of a float32 scalar: the correctly rounded float32 exp."""
    with np.errstate(over="ignore"):
        return F32(np.exp(np.float64(F32(x))))


def to_float32_array(name: str, value: Any) -> np.ndarray:
    """Model outputs and samples enter the maths as float32 arrays (diffusers upcasts to float32 too)."""
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return array.astype(np.float32, copy=False)


def timestep_as_int(timestep: Any) -> int:
    """Accept a Python/numpy integer (or a 0-d/size-1 array of one) as a discrete timestep."""
    array = np.asarray(timestep)
    if array.size != 1:
        raise ValueError(f"timestep must be a single value, got shape {array.shape}")
    value = array.reshape(()).item()
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"timestep must be an integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"timestep must be an integer, got {timestep!r}")
    return value


class SchedulerBase:
    """What the two numpy schedulers share with diffusers' ``SchedulerMixin`` surface.

    ``init_noise_sigma`` is 1.0 and ``scale_model_input`` is the identity for both DDIM and
    DPM-Solver multistep (both are VP schedulers working on unscaled latents); ``order`` is 1 for
    both, as in diffusers.
    """

    order = 1
    init_noise_sigma = 1.0

    config: dict
    timesteps: np.ndarray
    num_inference_steps: int | None

    def scale_model_input(self, sample: np.ndarray, timestep: Any = None) -> np.ndarray:
        """Identity, like ``DDIMScheduler.scale_model_input`` / ``DPMSolverMultistepScheduler.scale_model_input``."""
        return sample

    def add_noise(self, original: np.ndarray, noise: np.ndarray, timestep: Any) -> np.ndarray:
        """The forward process at one training timestep: sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·ε, float32 — what diffusers'
        schedulers' ``add_noise`` computes (SDEdit / img2img start from it: a partly noised image instead of pure
        noise)."""
        alpha_prod = F32(self.alphas_cumprod[timestep_as_int(timestep)])
        original = to_float32_array("original", original)
        noise = to_float32_array("noise", noise)
        return (sqrt32(alpha_prod) * original + sqrt32(F32(1.0) - alpha_prod) * noise).astype(np.float32)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.config["num_train_timesteps"])

    def __len__(self) -> int:
        return self.num_train_timesteps

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "trained_betas")
        return f"{type(self).__name__}({shown})"
