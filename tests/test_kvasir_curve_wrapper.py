"""The committed learning-curve wrapper (evaluations/kvasir_curve.py) hands `evaluate` arguments it accepts.

Its report-only call names every arm of every phase; an arm that two phases share (judge-kept x4: the ratio ablation
and its 5-seed phase) must be named once, or `evaluate` refuses the whole call ("given twice")."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import load_script


def load_wrapper():
    return load_script("evaluations/kvasir_curve.py")


def test_every_phase_arm_is_named_once_and_has_its_job_file():
    wrapper = load_wrapper()
    flags = wrapper.arm_flags(wrapper.ARMS)
    pairs = list(zip(flags[::2], flags[1::2]))
    names = {flag: [value.split("=", 1)[0] for f, value in pairs if f == flag]
             for flag in ("--arm", "--mix", "--arm-ratio")}
    assert {flag for flag, _ in pairs} == set(names)
    for listed in names.values():
        assert len(listed) == len(set(listed)), listed
    assert set(names["--arm"]) | set(names["--mix"]) == {arm for phase in wrapper.PHASES for arm in phase[0]}
    assert set(names["--mix"]) == set(wrapper.MIXES) and set(names["--arm-ratio"]) == set(wrapper.ARM_RATIOS)
    for flag, value in pairs:
        if flag == "--arm":
            assert Path(value.split("=", 1)[1]).is_file(), value


def test_the_arms_a_mix_draws_on_are_named_with_it_and_the_flags_are_the_same_in_every_call():
    """A phase naming only a mix still names the arms whose pools it draws on; the arm ratios come with their arms,
    in one order (the report-only call and the phase must plan the same runs)."""
    wrapper = load_wrapper()
    flags = wrapper.arm_flags(("copy-paste-x2", "judged-and-copy-paste"))
    assert flags == wrapper.arm_flags(("copy-paste-x2", "judged-and-copy-paste"))
    pairs = list(zip(flags[::2], flags[1::2]))
    arms = [value.split("=", 1)[0] for flag, value in pairs if flag == "--arm"]
    assert arms == ["copy-paste-x2", "copy-paste", "synthetic-judged-x4"]
    assert ("--mix", "judged-and-copy-paste=copy-paste+synthetic-judged-x4") in pairs
    assert [value for flag, value in pairs if flag == "--arm-ratio"] == ["copy-paste-x2=2", "judged-and-copy-paste=2"]
    assert wrapper.missing_model("judged-and-copy-paste") == ""  # a mix needs what its arms need: here no candidate


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


def test_the_full_length_draws_report_with_their_own_patience_and_draw():
    """Phases 40–49 train real and copy-paste ×2 without early stopping, a group per draw: the report-only call must
    name the same patience and draw as the phase, or it would plan other runs than those that finished."""
    wrapper = load_wrapper()
    numbered = dict(enumerate(wrapper.PHASES, 1))
    for draw in wrapper.DRAWS:
        phase = numbered[39 + draw]
        assert wrapper.group_of(phase) == f"full-{draw}" and phase[0] == wrapper.FULL_ARMS
        assert wrapper.report_flags(f"full-{draw}") == ["--seeds", "1", "--subset-draw", str(draw), "--patience", "15"]
        assert wrapper.GROUPS[f"full-{draw}"][1] == wrapper.DRAWS_FULL / f"draw-{draw}"
    assert "--patience" not in wrapper.report_flags("draw-3")  # the early-stopped draws as they were
    assert len(wrapper.PHASES) == 49
