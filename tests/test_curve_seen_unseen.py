"""evaluations/curve_seen_unseen.py splits a learning curve's per-frame scores by a generator's held-out list: the
paired difference on the frames it never trained on is told apart from the one on frames it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import load_script


def _script():
    return load_script("evaluations/curve_seen_unseen.py")


def _write_run(folder: Path, arm: str, seed: int, dice_of) -> None:
    frames = [{"frame": f"f{i}.jpg", "dice": dice_of(i), "iou": dice_of(i) / 2} for i in range(10)]
    (folder / f"{arm}-seed{seed}.json").write_text(json.dumps({"tests": {"kvasir": {"frames": frames}}}))


def test_a_gain_only_on_frames_the_generator_saw_is_told_apart(tmp_path, capsys):
    script = _script()
    held_out = {f"f{i}" for i in range(6)}  # the generator never trained on f0..f5
    for seed in range(3):
        _write_run(tmp_path, "real", seed, lambda i: 0.5 + 0.01 * seed)
        # +0.2 on the frames the generator saw (f6..f9), with a seed-dependent wobble; nothing on the unseen ones
        _write_run(tmp_path, "generated", seed, lambda i: 0.5 + 0.01 * seed + (0.2 + 0.01 * seed if i >= 6 else 0.0))
    rows = {row["split"]: row for row in script.compare(tmp_path, "real", ["generated"], held_out)}
    assert [rows[s]["frames"] for s in ("all", "unseen", "seen")] == [10, 6, 4]
    assert rows["unseen"]["dice"]["mean"] == pytest.approx(0.0)
    assert rows["seen"]["dice"]["mean"] == pytest.approx(0.21)
    assert rows["seen"]["dice"]["p_value"] < 0.05
    assert rows["all"]["dice"]["mean"] == pytest.approx(0.21 * 4 / 10)
    assert rows["seen"]["iou"]["mean"] == pytest.approx(0.105)
    listing = tmp_path / "held_out_frames.txt"
    listing.write_text("\n".join(sorted(held_out)) + "\n")
    assert script.main([str(tmp_path), "--base", "real", "--arms", "generated", "--held-out", str(listing)]) == 0
    table = capsys.readouterr().out
    assert "| generated | unseen (6) | 3 | +0.000" in table and "| generated | seen (4) | 3 | +0.210" in table
    with pytest.raises(SystemExit, match="no results of arm 'missing'"):
        script.compare(tmp_path, "real", ["missing"], held_out)


def test_the_curve_wrapper_writes_the_split_beside_its_committed_report(tmp_path):
    """kvasir_curve's collect step writes seen_unseen.md for the group's generated arms that have results, against
    the bases that have them; nothing while either is missing."""
    wrapper = load_script("evaluations/kvasir_curve.py")
    listing = tmp_path / "held_out_frames.txt"
    listing.write_text("f0.jpg\nf1.jpg\nf2.jpg\n")
    wrapper.GENERATOR_HELD_OUT = listing
    wrapper.REPO = tmp_path
    committed = tmp_path / "committed"
    results = committed / "results" / "0.05"
    results.mkdir(parents=True)
    wrapper.SEEN_UNSEEN = {"smallest": ("0.05", ("generated", "not-run"))}
    assert wrapper.write_seen_unseen("smallest", committed) is None  # no results yet
    for seed in range(3):
        _write_run(results, "real", seed, lambda i: 0.5 + 0.01 * seed)
        _write_run(results, "generated", seed, lambda i: 0.6 + 0.02 * seed)
    written = wrapper.write_seen_unseen("smallest", committed)
    text = written.read_text()
    assert written == committed / "seen_unseen.md"
    assert "| generated | unseen (3) | 3 | +0.110" in text and "| generated | seen (7) | 3 | +0.110" in text
    assert "arm − real" in text and "copy-paste-x2" not in text and "not-run" not in text
