"""evaluations/curve_draws.py reads a folder of subset draws with the engine's comparison
(engine.evaluation.subset_draws) and splits each comparison by the generator's held-out test frames;
kvasir_curve.py runs and reports each draw as a group of its own, with its own --subset-draw and seeds."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import load_script


def _write_run(root: Path, draw: int, arm: str, dice_of) -> None:
    # f0–f4: a polyp of 3 % of the frame, f5–f9: of 15 %
    frames = [{"frame": f"f{i}.jpg", "dice": dice_of(i), "iou": dice_of(i) / 2, "width": 100, "height": 100,
               "truth_boxes": [{"area": 300 if i < 5 else 1500}]} for i in range(10)]
    folder = root / f"draw-{draw}" / "results" / "0.05"
    folder.mkdir(parents=True, exist_ok=True)
    mean = sum(f["dice"] for f in frames) / len(frames)
    summary = {"dice": mean, "iou": mean / 2, "ap50": None, "ap": None}
    (folder / f"{arm}-seed0.json").write_text(json.dumps({"tests": {"kvasir": {"summary": summary,
                                                                                "frames": frames}}}))


def _jobs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "paste.toml").write_text('mode = "transplant"\nharmonize = "none"\nvariants = 2\n')
    (tmp_path / "add.toml").write_text('mode = "add"\nmask_source = "random"\nvariants = 4\n')
    return {"copy-paste-x2": tmp_path / "paste.toml", "generated": tmp_path / "add.toml"}


def test_arms_are_paired_by_draw_split_by_the_held_out_frames_and_a_draw_without_every_arm_is_left_out(tmp_path):
    script = load_script("evaluations/curve_draws.py")
    root = tmp_path / "draws"
    gains = {1: 0.05, 2: 0.07, 3: -0.01, 4: 0.05}
    for draw, gain in gains.items():
        _write_run(root, draw, "real", lambda i, d=draw: 0.4 + 0.01 * d)
        _write_run(root, draw, "copy-paste-x2", lambda i, d=draw: 0.6 + 0.01 * d)
        # the gain on the frames the generator saw (f5–f9) only
        _write_run(root, draw, "generated", lambda i, d=draw, g=gain: 0.6 + 0.01 * d + (2 * g if i >= 5 else 0.0))
    _write_run(root, 5, "copy-paste-x2", lambda i: 0.9)  # draw 5: the other arms have not finished
    settings = script.draw_settings(root, 10, 0.05, _jobs(tmp_path))
    text = script.summary(settings, held_out={"f0", "f1", "f2", "f3", "f4"})
    assert "Draws with finished runs: 5 of 10" in text and "bases: real, copy-paste-x2" in text
    assert "| 3 | 0.430 | 0.630 | 0.620 |" in text and "| 5 | – | 0.900 | – |" in text
    assert "| generated − copy-paste-x2 | 4 | +0.040 [" in text and "| 3 of 4 |" in text
    assert "generated vs copy-paste-x2 on kvasir at fraction 0.05: +0.040 Dice over 4 subset draws" in text
    # per polyp size: all of the gain on the 15 % polyps
    assert "| generated − copy-paste-x2 | 2-5 | 5 | 0.625 | 0.625 | +0.000" in text
    assert "| generated − copy-paste-x2 | 10-20 | 5 | 0.625 | 0.705 | +0.080 [" in text
    # and split by the held-out list: nothing on the unseen frames
    assert "## generated − copy-paste-x2: test frames the generator never trained on" in text
    assert "| generated | unseen (5) | 4 | +0.000" in text and "| generated | seen (5) | 4 | +0.080" in text
    # a comparison the engine does not make (one generated arm against another), asked by --versus
    for draw, gain in gains.items():
        _write_run(root, draw, "own-mask", lambda i, d=draw, g=gain: 0.6 + 0.01 * d + (2 * g if i >= 5 else 0.0)
                   + (0.1 if i < 5 else 0.0))
    jobs = {**_jobs(tmp_path), "own-mask": tmp_path / "add.toml"}
    versus = script.summary(script.draw_settings(root, 10, 0.05, jobs), {"f0", "f1", "f2", "f3", "f4"},
                            (("generated", "own-mask"),))
    assert "## own-mask − generated, paired by draw" in versus
    assert "| own-mask | all (10) | 4 | +0.050 [" in versus and "| own-mask | unseen (5) | 4 | +0.100" in versus
    assert "## own-mask − generated" not in text
    lonely = tmp_path / "lonely"
    _write_run(lonely, 1, "copy-paste-x2", lambda i: 0.5)
    _write_run(lonely, 1, "generated", lambda i: 0.6)
    assert "fewer than two draws with both arms: no comparison yet" in script.summary(
        script.draw_settings(lonely, 10, 0.05, _jobs(tmp_path)), set())


def test_each_draw_is_a_phase_and_a_report_group_with_its_own_draw_and_seeds():
    wrapper = load_script("evaluations/kvasir_curve.py")
    draws = [(number, phase) for number, phase in enumerate(wrapper.PHASES, 1)
             if wrapper.group_of(phase).startswith("draw-")]
    assert [number for number, _ in draws] == list(range(20, 40))  # phases 20–29, then 30–39 on the same draws
    for draw, ((_, phase), (_, own_mask)) in enumerate(zip(draws[:10], draws[10:]), 1):
        assert phase[0] == ("copy-paste-x2", "default-judged-x4") and phase[1] == "0.05"
        assert own_mask[0] == ("own-mask-judged-x4",) and own_mask[1:] == phase[1:]  # the same draw and group
        assert wrapper.report_flags(f"draw-{draw}") == ["--seeds", "1", "--subset-draw", str(draw)]
        assert wrapper.GROUPS[f"draw-{draw}"][0] == f"out-draw-{draw}"
        assert wrapper.arms_of(f"draw-{draw}") == ("copy-paste-x2", "default-judged-x4", "own-mask-judged-x4")
    assert wrapper.ARM_RATIOS["own-mask-judged-x4"] == 2.0
    # the earlier groups' reports are asked as they always were
    assert wrapper.report_flags("curve") == [] and wrapper.report_flags("smallest") == ["--seeds", "8"]
