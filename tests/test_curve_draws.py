"""evaluations/curve_draws.py pairs arms draw by draw (independent real subsets, one seed each) and kvasir_curve.py
runs and reports each draw as a group of its own: a draw's report is asked with its own --subset-draw and seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import load_script


def _write_run(root: Path, draw: int, arm: str, dice_of) -> None:
    # f0–f4: a polyp of 3 % of the frame, f5–f9: of 15 %
    frames = [{"frame": f"f{i}.jpg", "dice": dice_of(i), "iou": dice_of(i) / 2, "width": 100, "height": 100,
               "truth_boxes": [{"area": 300 if i < 5 else 1500}]} for i in range(10)]
    folder = root / f"draw-{draw}" / "results" / "0.05"
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"dice": sum(f["dice"] for f in frames) / len(frames)}
    (folder / f"{arm}-seed0.json").write_text(json.dumps({"tests": {"kvasir": {"summary": summary,
                                                                                "frames": frames}}}))


def test_arms_are_paired_by_draw_and_a_draw_without_every_arm_is_left_out(tmp_path):
    script = load_script("evaluations/curve_draws.py")
    held_out = {"f0", "f1", "f2", "f3", "f4"}
    gains = {1: 0.05, 2: 0.07, 3: -0.01, 4: 0.05}
    for draw, gain in gains.items():
        _write_run(tmp_path, draw, "copy-paste-x2", lambda i, d=draw: 0.6 + 0.01 * d)
        _write_run(tmp_path, draw, "generated", lambda i, d=draw, g=gain: 0.6 + 0.01 * d + g)
    _write_run(tmp_path, 5, "copy-paste-x2", lambda i: 0.9)  # draw 5: the generated arm has not finished
    (tmp_path / "draw-x").mkdir()  # not a draw
    assert script.paired_draws(tmp_path, "0.05", ["copy-paste-x2", "generated"]) == [1, 2, 3, 4]
    rows = {row["split"]: row for row in script.compare_runs(
        lambda arm: {d: r for d, r in script.read_draws(tmp_path, "0.05", arm).items() if d in gains},
        "copy-paste-x2", ["generated"], held_out)}
    assert rows["all"]["dice"]["mean"] == pytest.approx(sum(gains.values()) / 4)
    assert rows["all"]["seeds"] == [1, 2, 3, 4]
    text = script.summary(tmp_path, "0.05", ["generated"], ["copy-paste-x2"], held_out, planned=10)
    assert text.startswith("Draws finished with every arm: 4 of 10 planned (1, 2, 3, 4)")
    assert "| 3 | 0.630 | 0.620 |" in text  # draw 3: copy-paste, then the generated arm
    assert "| generated | all (10) | 4 | +0.040" in text and "| arm − copy-paste-x2 | test frames | draws |" in text
    assert "Draws won against copy-paste-x2 (all test frames): generated: 3 of 4." in text
    # per polyp size, paired by draw: the same gain in both bins here
    assert "| 2-5 | 5 | 0.625 | 0.665 (+0.040 [" in text and "| 10-20 | 5 | 0.625 | 0.665 (+0.040 [" in text
    lonely = tmp_path / "lonely"
    _write_run(lonely, 1, "copy-paste-x2", lambda i: 0.5)
    _write_run(lonely, 1, "generated", lambda i: 0.6)
    assert "Fewer than two draws with every arm: no comparison yet." in script.summary(
        lonely, "0.05", ["generated"], ["copy-paste-x2"], held_out)


def test_each_draw_is_a_phase_and_a_report_group_with_its_own_draw_and_seeds():
    wrapper = load_script("evaluations/kvasir_curve.py")
    draws = [(number, phase) for number, phase in enumerate(wrapper.PHASES, 1) if wrapper.group_of(phase) != "curve"
             and wrapper.group_of(phase).startswith("draw-")]
    assert [number for number, _ in draws] == list(range(20, 30))
    for draw, (_, phase) in enumerate(draws, 1):
        assert phase[0] == ("copy-paste-x2", "default-judged-x4") and phase[1] == "0.05"
        assert wrapper.report_flags(f"draw-{draw}") == ["--seeds", "1", "--subset-draw", str(draw)]
        assert wrapper.GROUPS[f"draw-{draw}"][0] == f"out-draw-{draw}"
    # the earlier groups' reports are asked as they always were
    assert wrapper.report_flags("curve") == [] and wrapper.report_flags("smallest") == ["--seeds", "8"]
