"""The committed learning-curve wrapper (evaluations/kvasir_curve.py) hands `evaluate` arguments it accepts.

Its report-only call names every arm of every phase; an arm that two phases share (judge-kept x4: the ratio ablation
and its 5-seed phase) must be named once, or `evaluate` refuses the whole call ("given twice")."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_wrapper():
    spec = importlib.util.spec_from_file_location("kvasir_curve", REPO / "evaluations" / "kvasir_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_phase_arm_is_named_once_and_has_its_job_file():
    wrapper = load_wrapper()
    flags = wrapper.arm_flags(wrapper.ARMS)
    names = [value.split("=", 1)[0] for flag, value in zip(flags[::2], flags[1::2])]
    assert set(flags[::2]) == {"--arm"}
    assert len(names) == len(set(names)), names
    assert set(names) == {arm for arms, _, _ in wrapper.PHASES for arm in arms}
    for value in flags[1::2]:
        assert Path(value.split("=", 1)[1]).is_file(), value



def test_an_arm_whose_candidate_model_is_missing_is_skipped_and_named(tmp_path):
    wrapper = load_wrapper()
    wrapper.JOBS = tmp_path / "jobs"
    wrapper.REPO = tmp_path
    wrapper.JOBS.mkdir()
    (wrapper.JOBS / "candidate.toml").write_text('mode = "add"\nmodel = "../.bench/no-such-bundle"\n')
    (wrapper.JOBS / "copy-paste.toml").write_text('mode = "transplant"\nharmonize = "none"\n')
    line = wrapper.missing_model("candidate")
    assert line and ".bench/no-such-bundle" in line and "jobs/candidate.toml" in line
    assert wrapper.missing_model("copy-paste") == ""  # needs no trained candidate
    (tmp_path / ".bench" / "no-such-bundle").mkdir(parents=True)
    assert wrapper.missing_model("candidate") == ""  # runs once the bundle is there
