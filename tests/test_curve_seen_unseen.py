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
