"""engine.schedulers (pure numpy) against the real diffusers 0.39.0 schedulers.

Every comparison runs a whole denoising loop on a (2, 4, 8, 8) float32 sample: at each timestep a
fixed deterministic "model" (a function of the current sample and t) produces the model output
for each implementation from *its own* current sample, so any deviation propagates as in real
use.  We assert that the timesteps are identical (same values, int64) and that after every step
``max |ours - diffusers| < 1e-5`` (TOL below).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from engine.export.random_pipeline import SD2_INPAINT_SCHEDULER
from engine.schedulers import SCHEDULER_NAMES, make_scheduler  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning:diffusers"),  # algorithm_type="dpmsolver" deprecation
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # diffusers + numpy 2
]

REPO_ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5
SHAPE = (2, 4, 8, 8)

SD2_INPAINT_CONFIG = {**SD2_INPAINT_SCHEDULER, "_diffusers_version": "0.8.0"}

_REFERENCE_CLASSES = {
    "ddim": diffusers.DDIMScheduler,
    "dpm++": diffusers.DPMSolverMultistepScheduler,
}

_rng = np.random.default_rng(1234)
_BASE_NOISE = _rng.standard_normal(SHAPE).astype(np.float32)
_INITIAL_SAMPLE = _rng.standard_normal(SHAPE).astype(np.float32)
_TARGET_SEED = _rng.standard_normal(SHAPE)

# worst deviation seen over the whole module, reported in the test summary
_MAX_SEEN = {"ddim": 0.0, "dpm++": 0.0}


def make_fake_model(alphas_cumprod, prediction_type: str):
    """Deterministic stand-in for the UNet, a function of (sample, t) only.

    It is a near-ideal denoiser for a fixed target image x0 (so samples keep the magnitude of
    real latents, ~1-4, as in real use) plus a sample- and t-dependent perturbation, expressed in
    the scheduler's prediction type.
    """
    alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
    target = 0.8 * np.tanh(_TARGET_SEED)

    def model(sample: np.ndarray, t: int) -> np.ndarray:
        x = sample.astype(np.float64)
        a = alphas_cumprod[int(t)]
        sqrt_a, sqrt_b = np.sqrt(a), np.sqrt(1.0 - a)
        wobble = 0.1 * np.sin(3.0 * x) + 0.05 * np.cos(int(t) / 53.0) * _BASE_NOISE
        if prediction_type == "sample":
            out = target + wobble
        else:
            eps = (x - sqrt_a * target) / sqrt_b + wobble
            out = eps if prediction_type == "epsilon" else sqrt_a * eps - sqrt_b * (target + wobble)
        return out.astype(np.float32)

    return model


def with_sd2(**overrides):
    cfg = dict(SD2_INPAINT_CONFIG)
    cfg.update(overrides)
    return cfg


def run_and_compare(name: str, config: dict, steps: int, start_index: int = 0, begin_index: bool = False) -> float:
    """Run both schedulers through the full loop; assert equal timesteps and per-step agreement.

    ``start_index`` starts the loop at a later timestep (img2img style); ``begin_index`` also
    announces it with ``set_begin_index`` as diffusers' inpaint pipeline does.
    """
    ours = make_scheduler(name, config)
    ref = _REFERENCE_CLASSES[name].from_config(config)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    if begin_index:
        ours.set_begin_index(start_index)
        if hasattr(ref, "set_begin_index"):  # diffusers' DDIM has none (it needs none)
            ref.set_begin_index(start_index)

    ref_timesteps = ref.timesteps.numpy()
    assert ours.timesteps.dtype == np.int64
    np.testing.assert_array_equal(ours.timesteps, ref_timesteps)
    assert ours.init_noise_sigma == float(ref.init_noise_sigma) == 1.0

    fake_model = make_fake_model(ref.alphas_cumprod.numpy(), ref.config.prediction_type)
    ours_sample = _INITIAL_SAMPLE.copy()
    ref_sample = torch.from_numpy(_INITIAL_SAMPLE.copy())
    worst = 0.0
    for i, t in enumerate(ref_timesteps[start_index:]):
        t_int = int(t)
        ours_in = ours.scale_model_input(ours_sample, ours.timesteps[start_index + i])
        np.testing.assert_array_equal(ours_in, ours_sample)
        ours_out = fake_model(ours_in, t_int)
        ref_out = torch.from_numpy(fake_model(ref.scale_model_input(ref_sample, t).numpy(), t_int))

        ours_sample = ours.step(ours_out, ours.timesteps[start_index + i], ours_sample)
        ref_sample = ref.step(ref_out, t, ref_sample).prev_sample

        assert ours_sample.dtype == np.float32 and ours_sample.shape == SHAPE
        ref_np = ref_sample.numpy()
        assert np.isfinite(ref_np).all()
        diff = float(np.max(np.abs(ours_sample.astype(np.float64) - ref_np.astype(np.float64))))
        worst = max(worst, diff)
        assert diff < TOL, f"step {i} (t={t_int}): max abs diff {diff:.3g} >= {TOL}"
    _MAX_SEEN[name] = max(_MAX_SEEN[name], worst)
    return worst


# --------------------------------------------------------------------------------------------
# DDIM
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 5, 20, 50])
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_sd2_inpainting_config(name, steps):
    run_and_compare(name, SD2_INPAINT_CONFIG, steps)


@pytest.mark.parametrize("steps", [1, 3, 7, 25, 50])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_ddim_timestep_spacing(spacing, steps):
    run_and_compare("ddim", with_sd2(timestep_spacing=spacing), steps)


@pytest.mark.parametrize(
    "overrides",
    [
        {"prediction_type": "v_prediction"},
        {"prediction_type": "v_prediction", "timestep_spacing": "trailing"},
        {"prediction_type": "sample"},
        {"set_alpha_to_one": True},
        {"set_alpha_to_one": True, "steps_offset": 0},
        {"set_alpha_to_one": False, "steps_offset": 0},
        {"clip_sample": True},
        {"clip_sample": True, "clip_sample_range": 0.5, "prediction_type": "v_prediction"},
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
        {"rescale_betas_zero_snr": True, "timestep_spacing": "linspace", "prediction_type": "v_prediction"},
        {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"trained_betas": np.linspace(0.0002, 0.018, 1000).tolist()},
    ],
    ids=lambda o: ",".join(f"{k}={v}" if k != "trained_betas" else "trained_betas" for k, v in o.items()),
)
@pytest.mark.parametrize("steps", [5, 50])
def test_ddim_options(overrides, steps):
    run_and_compare("ddim", with_sd2(**overrides), steps)


def test_ddim_defaults_from_dpm_config():
    """A DPM-Solver config (no clip_sample / set_alpha_to_one keys) gives DDIM's own defaults."""
    cfg = {
        "_class_name": "DPMSolverMultistepScheduler",
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "solver_order": 2,
        "algorithm_type": "dpmsolver++",
        "use_karras_sigmas": True,
        "timestep_spacing": "leading",
        "steps_offset": 1,
    }
    sch = make_scheduler("ddim", cfg)
    assert sch.config["clip_sample"] is True and sch.config["set_alpha_to_one"] is True
    run_and_compare("ddim", cfg, 20)


# --------------------------------------------------------------------------------------------
# DPM-Solver++
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 3, 7, 25, 50])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_dpm_timestep_spacing(spacing, steps):
    run_and_compare("dpm++", with_sd2(timestep_spacing=spacing), steps)


@pytest.mark.parametrize(
    "overrides",
    [
        {"solver_order": 1},
        {"solver_order": 2, "lower_order_final": False},
        {"solver_order": 3},
        {"solver_order": 3, "lower_order_final": False},
        {"solver_type": "heun"},
        {"solver_type": "heun", "lower_order_final": False},
        {"use_karras_sigmas": True},
        {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"},
        {"final_sigmas_type": "sigma_min"},
        {"final_sigmas_type": "sigma_min", "lower_order_final": False},
        {"final_sigmas_type": "sigma_min", "euler_at_final": True},
        {"prediction_type": "v_prediction"},
        {"prediction_type": "sample"},
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
        {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
        {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_type": "heun"},
        {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3},
        {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "prediction_type": "v_prediction"},
        {"algorithm_type": "deis", "final_sigmas_type": "sigma_min"},
        {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1},
        {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1, "timestep_spacing": "trailing"},
        {"lambda_min_clipped": -3.0, "timestep_spacing": "leading"},
        {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
        {"variance_type": "fixed_small"},  # DDPM-style value that DPM-Solver treats as "no learned variance"
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
@pytest.mark.parametrize("steps", [5, 20, 50])
def test_dpm_options(overrides, steps):
    run_and_compare("dpm++", with_sd2(**overrides), steps)


def test_dpm_karras_reads_sigma_range_from_foreign_config():
    """diffusers' Karras conversion uses config.sigma_min/sigma_max carried over from e.g. an Euler config."""
    cfg = with_sd2(use_karras_sigmas=True, sigma_min=0.05, sigma_max=10.0)
    run_and_compare("dpm++", cfg, 20)


@pytest.mark.parametrize("begin_index", [False, True])
@pytest.mark.parametrize("start_index", [4, 7])
def test_dpm_starting_mid_schedule(start_index, begin_index):
    """img2img-style: start at a later timestep, found by lookup or given by set_begin_index."""
    run_and_compare("dpm++", SD2_INPAINT_CONFIG, 20, start_index=start_index, begin_index=begin_index)


@pytest.mark.parametrize("steps", [5, 20])
def test_dpm_karras_cosine_with_repeated_timesteps(steps):
    """squaredcos_cap_v2 + Karras gives repeated (unrounded, truncated) timesteps such as 998, 998.

    diffusers then resolves the first step to the *second* occurrence unless the begin index is
    set (its inpaint pipeline sets it); we check both the schedule and the set_begin_index loop.
    """
    cfg = with_sd2(beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True)
    run_and_compare("dpm++", cfg, steps, begin_index=True)
    ours = make_scheduler("dpm++", cfg)
    ours.set_timesteps(steps)
    assert ours.timesteps[0] == ours.timesteps[1]
    ours.step(_INITIAL_SAMPLE, ours.timesteps[0], _INITIAL_SAMPLE)
    assert ours.step_index == 2  # looked up as index 1, like diffusers' index_for_timestep


def test_ddim_set_begin_index_is_noop():
    run_and_compare("ddim", SD2_INPAINT_CONFIG, 20, start_index=5, begin_index=True)


def test_dpm_set_timesteps_resets_state():
    sch = make_scheduler("dpm++", SD2_INPAINT_CONFIG)
    fake_model = make_fake_model(sch.alphas_cumprod, "epsilon")

    def loop(steps):
        sch.set_timesteps(steps)
        sample = _INITIAL_SAMPLE.copy()
        for t in sch.timesteps:
            sample = sch.step(fake_model(sample, int(t)), t, sample)
        return sample

    first = loop(10)
    loop(4)
    np.testing.assert_array_equal(loop(10), first)


def test_dpm_step_past_end_raises():
    sch = make_scheduler("dpm++", SD2_INPAINT_CONFIG)
    sch.set_timesteps(2)
    fake_model = make_fake_model(sch.alphas_cumprod, "epsilon")
    sample = _INITIAL_SAMPLE.copy()
    for t in sch.timesteps:
        sample = sch.step(fake_model(sample, int(t)), t, sample)
    with pytest.raises(ValueError):
        sch.step(sample, sch.timesteps[-1], sample)


# --------------------------------------------------------------------------------------------
# API surface and rejected options
# --------------------------------------------------------------------------------------------


def test_scheduler_names_and_unknown_name():
    assert SCHEDULER_NAMES == ("ddim", "dpm++")
    with pytest.raises(ValueError, match=r"ddim.*dpm\+\+"):
        make_scheduler("euler", SD2_INPAINT_CONFIG)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [0, -1, 1001])
def test_bad_num_inference_steps(name, steps):
    sch = make_scheduler(name, SD2_INPAINT_CONFIG)
    with pytest.raises(ValueError, match="num_inference_steps"):
        sch.set_timesteps(steps)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_step_before_set_timesteps_raises(name):
    sch = make_scheduler(name, SD2_INPAINT_CONFIG)
    with pytest.raises(ValueError, match="set_timesteps"):
        sch.step(_INITIAL_SAMPLE, 999, _INITIAL_SAMPLE)


@pytest.mark.parametrize(
    "name, option, value",
    [
        ("ddim", "thresholding", True),
        ("ddim", "prediction_type", "flow_prediction"),
        ("ddim", "timestep_spacing", "karras"),
        ("ddim", "beta_schedule", "sigmoid"),
        ("dpm++", "thresholding", True),
        ("dpm++", "algorithm_type", "sde-dpmsolver++"),
        ("dpm++", "algorithm_type", "sde-dpmsolver"),
        ("dpm++", "algorithm_type", "unipc"),
        ("dpm++", "solver_order", 4),
        ("dpm++", "solver_type", "euler"),
        ("dpm++", "variance_type", "learned"),
        ("dpm++", "variance_type", "learned_range"),
        ("dpm++", "use_lu_lambdas", True),
        ("dpm++", "use_exponential_sigmas", True),
        ("dpm++", "use_beta_sigmas", True),
        ("dpm++", "use_flow_sigmas", True),
        ("dpm++", "prediction_type", "flow_prediction"),
        ("dpm++", "final_sigmas_type", "maximum"),
        ("dpm++", "algorithm_type", "deis"),  # with the default final_sigmas_type="zero", as diffusers
        ("dpm++", "timestep_spacing", "karras"),
        ("dpm++", "beta_schedule", "sigmoid"),
    ],
)
def test_unsupported_options_raise(name, option, value):
    with pytest.raises(ValueError) as excinfo:
        make_scheduler(name, with_sd2(**{option: value}))
    message = str(excinfo.value)
    assert option in message and str(value) in message


def test_dpmsolver_with_zero_final_sigma_is_rejected_like_diffusers():
    cfg = with_sd2(algorithm_type="dpmsolver")
    with pytest.raises(ValueError):
        diffusers.DPMSolverMultistepScheduler.from_config(cfg)
    with pytest.raises(ValueError, match="final_sigmas_type"):
        make_scheduler("dpm++", cfg)


def test_private_and_foreign_keys_are_ignored():
    cfg = with_sd2(_use_default_values=["steps_offset"], some_future_key=3)
    ours = make_scheduler("ddim", cfg)
    ref = diffusers.DDIMScheduler.from_config(cfg)
    assert ours.config["steps_offset"] == ref.config.steps_offset == 0
    run_and_compare("ddim", cfg, 10)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_step_returns_float32_for_float16_inputs(name):
    sch = make_scheduler(name, SD2_INPAINT_CONFIG)
    sch.set_timesteps(5)
    half = _INITIAL_SAMPLE.astype(np.float16)
    out = sch.step(half, sch.timesteps[0], half)
    assert out.dtype == np.float32 and out.shape == SHAPE and np.isfinite(out).all()


def test_import_does_not_load_torch():
    code = "import engine.schedulers, sys; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_report_max_deviation(capsys):
    """Prints the worst per-step deviation observed by the comparison tests run before it."""
    with capsys.disabled():
        print(f"\n[schedulers] max abs deviation vs diffusers: ddim={_MAX_SEEN['ddim']:.3g} dpm++={_MAX_SEEN['dpm++']:.3g}")
    assert all(v < TOL for v in _MAX_SEEN.values())


@pytest.mark.parametrize("timestep", [0, 250, 999])
def test_ddim_add_noise_equals_diffusers(timestep):
    """The forward process SDEdit starts from (a partly noised image), as diffusers' DDIMScheduler.add_noise."""
    rng = np.random.default_rng(timestep)
    original = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    noise = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ours = make_scheduler("ddim", SD2_INPAINT_CONFIG).add_noise(original, noise, timestep)
    theirs = diffusers.DDIMScheduler.from_config(SD2_INPAINT_CONFIG).add_noise(
        torch.from_numpy(original), torch.from_numpy(noise), torch.tensor([timestep])).numpy()
    assert ours.dtype == np.float32 and np.abs(ours - theirs).max() < TOL
