"""Mixed arms and an arm's own ratio in `evaluate`: a mix draws its variants in equal shares from the pools of the
arms it names (so copy-paste + a generated arm at ratio 2 is exactly their two ratio-1 pools together) without
generating anything of its own; an arm's own ratio is its curve's, not an ablation's; the flags are checked in one
line each."""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import pytest

from cli_helpers import run_main
from conftest import REPO_ROOT
from engine.errors import InputError

DEMO_MODEL = REPO_ROOT / "exported_models" / "demo-sd-inpaint"
TINY = ["--seeds", "1", "--max-steps", "20", "--validate-every", "10", "--patience", "3", "--size", "32",
        "--widths", "4,8,16", "--threads", "1", "--quiet"]


def _pool(prefix: str, count: int):
    from engine.evaluation.segdata import SegmentationSet

    names = [f"{prefix}/variant{i:02d}.png" for i in range(count)]
    return SegmentationSet(names, np.zeros((count, 1, 1, 3), np.uint8), np.zeros((count, 1, 1), np.float32),
                           [hashlib.sha256(n.encode()).hexdigest() for n in names], [None] * count, [None] * count)


def _lowest(pool, count: int) -> set[str]:
    return set(sorted(pool.names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:count])


def test_a_mix_takes_equal_shares_each_its_pools_lowest_by_hash():
    from engine.evaluation.curve_arms import draw_mixed

    paste, generated = _pool("paste", 10), _pool("generated", 12)
    drawn, short = draw_mixed([paste, generated], real_count=7, ratio=1.0)  # 7 = 4 + 3: the first pool takes one more
    assert short is None and len(drawn) == 7
    assert set(drawn.names) == _lowest(paste, 4) | _lowest(generated, 3)
    both, _ = draw_mixed([paste, generated], real_count=5, ratio=2.0)  # 10 = 5 + 5: each pool's ratio-1 draw together
    alone = [draw_mixed([pool], real_count=5, ratio=1.0)[0] for pool in (paste, generated)]
    assert set(both.names) == set(alone[0].names) | set(alone[1].names) and len(both) == 10
    one, _ = draw_mixed([generated], real_count=6, ratio=0.5)  # one pool: the plain arm's draw
    assert set(one.names) == _lowest(generated, 3)
    few, short = draw_mixed([paste, _pool("tiny", 2)], real_count=8, ratio=1.0)  # a pool with too few gives what it has
    assert len(few) == 6 and short == ("asks 8 variants, the arm has 6: its pool is real + 6 (plan more variants per "
                                       "frame in its job)")


def _settings(tmp_path, *extra):
    from engine.cli.evaluate import curve_settings, register_commands

    parser = argparse.ArgumentParser()
    register_commands(parser.add_subparsers(dest="command"))
    job = tmp_path / "add.toml"
    job.write_text('mode = "add"\n', encoding="utf-8")
    test = tmp_path / "test"
    test.mkdir(exist_ok=True)
    return curve_settings(parser.parse_args(["evaluate", "--train", str(tmp_path), "--test", str(test), "--out",
                                             str(tmp_path / "o"), "--arm", f"add={job}", "--arm",
                                             f"paste={job}", *extra]))


def test_the_plan_gives_a_mix_and_an_arm_their_own_ratio_and_the_flags_are_checked(tmp_path):
    from engine.evaluation.curve_plan import check_settings, plan_runs

    settings = _settings(tmp_path, "--mix", "both=paste+add", "--arm-ratio", "both=2", "--arm-ratio", "paste=2",
                         "--real-fractions", "0.1", "--seeds", "2", "--ratio-ablation", "0.5,2")
    check_settings(settings)
    assert settings.arm_names() == ["real", "add", "paste", "both"] and settings.components("both") == ("paste", "add")
    runs = plan_runs(settings)
    main = {(r.arm, r.seed): r.ratio for r in runs if not r.ablation}
    assert main == {("real", 0): None, ("real", 1): None, ("add", 0): 1.0, ("add", 1): 1.0, ("paste", 0): 2.0,
                    ("paste", 1): 2.0, ("both", 0): 2.0, ("both", 1): 2.0}
    # the ablation tries 0.5 on every arm and 2 only where 2 is not the arm's own ratio
    assert sorted({(r.arm, r.ratio) for r in runs if r.ablation}) == [("add", 0.5), ("add", 2.0), ("both", 0.5),
                                                                      ("paste", 0.5)]
    assert [r.name for r in runs if not r.ablation and r.seed == 0] == ["real-seed0", "add-seed0", "paste-seed0",
                                                                        "both-seed0"]

    def refused(*extra):
        with pytest.raises(InputError) as caught:
            check_settings(_settings(tmp_path, *extra))
        return str(caught.value)

    assert "nope is not an arm with variants of its own (given by --arm, --generate or --synthetic: add, paste)" in \
        refused("--mix", "both=add+nope")
    assert "name two or more different arms" in refused("--mix", "both=add")
    assert "name two or more different arms" in refused("--mix", "both=add+add")
    assert "the name 'paste' is taken by another arm" in refused("--mix", "paste=add+paste")
    assert "--mix other=add+both: both is not an arm with variants of its own" in refused(
        "--mix", "both=add+paste", "--mix", "other=add+both")  # a mix of mixes is not a thing
    assert "--arm-ratio real=2: no arm 'real'" in refused("--arm-ratio", "real=2")
    assert "--arm-ratio later=2: no arm 'later' (arms: add, paste)" in refused("--arm-ratio", "later=2")
    # a mix preset by name brings the preset arms it draws on, unless they are given
    preset = _settings(tmp_path, "--mix", "judged-and-copy-paste")
    assert preset.mixes == {"judged-and-copy-paste": ("copy-paste", "synthetic-judged")}
    assert preset.arm_names() == ["real", "add", "paste", "copy-paste", "synthetic-judged", "judged-and-copy-paste"]
    assert preset.arms["copy-paste"] == tmp_path / "o" / "jobs" / "copy-paste.toml"
    check_settings(preset)
    with pytest.raises(InputError, match="--mix judged: no such mix preset .*judged-and-copy-paste"):
        _settings(tmp_path, "--mix", "judged")
    with pytest.raises(InputError, match="--mix both: given twice"):
        _settings(tmp_path, "--mix", "both=add+paste", "--mix", "both=add+paste")
    with pytest.raises(SystemExit):
        _settings(tmp_path, "--arm-ratio", "paste=-1")


def test_a_mixed_arm_trains_on_its_arms_pools_and_generates_nothing_of_its_own(tmp_path):
    from engine.samples import generate_sample_set

    root = tmp_path / "frames"
    generate_sample_set(root / "train", count=40, seed=1, width=96, height=80, with_polyps_every=1)
    generate_sample_set(root / "test", count=4, seed=2, width=96, height=80, with_polyps_every=1)
    job = tmp_path / "add.toml"
    job.write_text(f'model = "{DEMO_MODEL}"\nmode = "add"\nmask_source = "random"\nsteps = 2\nformats = ["coco"]\n',
                   encoding="utf-8")
    out = tmp_path / "eval"
    data = ["--train", root / "train", "--test", root / "test", "--arm", f"add={job}", "--arm", "copy-paste",
            "--mix", "both=copy-paste+add", "--arm-ratio", "both=2", "--real-fractions", "0.25", "--out", out]
    result = run_main(["evaluate", *data, *TINY])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "both: 2 synthetic per real frame, drawn equally from the pools of copy-paste, add" in result.stderr
    assert sorted(p.name for p in (out / "synthetic" / "0.25").iterdir()) == ["add", "copy-paste"]
    records = {p.stem: json.loads(p.read_text()) for p in (out / "results" / "0.25").glob("*.json")}
    assert sorted(records) == ["add-seed0", "both-seed0", "copy-paste-seed0", "real-seed0"]
    both = records["both-seed0"]
    # 16 asked, 8 from each pool: the two ratio-1 arms' draws together (a pool that placed fewer gives what it has)
    assert both["ratio"] == 2.0 and both["real_frames"] == 8 and 12 <= both["synthetic_frames"] <= 16
    assert both["synthetic_frames"] == (records["add-seed0"]["synthetic_frames"]
                                        + records["copy-paste-seed0"]["synthetic_frames"])
    report = json.loads((out / "report.json").read_text())
    assert report["arms"]["both"] == "equal shares of the pools of copy-paste and add"
    assert report["arm_ratios"] == {"both": 2.0} and "both" in report["points"][0]["differences"]
    assert "; both: 2, drawn deterministically" in (out / "report.html").read_text()
    # the same flags again: every run reused, nothing generated or trained
    again = run_main(["evaluate", *data, *TINY])
    assert again.returncode == 0 and again.stderr.count("done earlier, reused") == 4
    assert "training on" not in again.stderr
