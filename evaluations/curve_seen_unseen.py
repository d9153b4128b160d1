"""A learning curve's paired differences on the test frames a generator never trained on, beside those it did.

On Kvasir-SEG's own test split the project's models are not clean: the default model trained on every Kvasir-SEG frame
outside its 56 held-out ones, so 41 of the curve's 97 test frames were in its training set. A generated arm may score
well there because the model has seen those polyps, which copy-paste and the real arm have not. This splits each run's
per-frame scores (results/<fraction>/<arm>-seed<k>.json, restricted by engine.evaluation.generator_seen.on_frames) by a
model's held-out list and gives, for each arm against a base arm, the per-seed paired difference in mean Dice and IoU
(95 % CI, paired t-test over seeds, Wilcoxon over frames; engine.evaluation.evaluation_report.paired) on all test
frames, on the unseen ones and on the seen ones.

    python evaluations/curve_seen_unseen.py evaluations/kvasir-curve/results/0.1 --base copy-paste-x2 \\
        --arms synthetic-judged-x4-ratio2 lift128-judged-x4 \\
        --held-out training_runs/compact-anneal/model/held_out_frames.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPLITS = ("all", "unseen", "seen")


def stem(frame: str) -> str:
    return Path(frame).stem


def read_held_out(path: Path) -> set[str]:
    """The frame stems of a model's held_out_frames.txt (one name per line)."""
    return {stem(line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def read_runs(results: Path, arm: str, test: str) -> dict[int, dict]:
    """seed → that run's record on ``test`` (its "summary" and per-frame "frames")."""
    runs = {}
    for path in results.glob(f"{arm}-seed*.json"):
        seed = path.stem.rsplit("-seed", 1)[1]
        if seed.isdigit():
            runs[int(seed)] = json.loads(path.read_text())["tests"][test]
    if not runs:
        raise SystemExit(f"{results}: no results of arm {arm!r} ({arm}-seed<k>.json)")
    return runs


def compare(results: Path, base: str, arms: list[str], held_out: set[str], test: str = "kvasir") -> list[dict]:
    """Each arm against ``base`` over the seeds of one results folder."""
    return compare_runs(lambda arm: read_runs(results, arm, test), base, arms, held_out)


def compare_runs(runs_of, base: str, arms: list[str], held_out: set[str]) -> list[dict]:
    """Each arm against ``base``, paired by the keys of ``runs_of(arm)`` (key → that run's test record): the seeds of
    one subset, or the subset draws of evaluations/curve_draws.py."""
    from engine.evaluation.evaluation_report import paired
    from engine.evaluation.generator_seen import on_frames

    keep = {"all": lambda name: True, "unseen": lambda name: name in held_out,
            "seen": lambda name: name not in held_out}
    base_runs = runs_of(base)
    rows = []
    for arm in arms:
        arm_runs = runs_of(arm)
        for split in SPLITS:
            by_stem = (lambda frame, split=split: keep[split](stem(frame)))
            diff = paired({base: on_frames(base_runs, by_stem), arm: on_frames(arm_runs, by_stem)}, (base, arm))
            frames = sum(keep[split](stem(r["frame"])) for r in next(iter(base_runs.values()))["frames"])
            rows.append({"arm": arm, "split": split, "frames": frames, "seeds": diff["seeds"], "dice": diff["dice"],
                         "iou": diff["iou"], "per_frame_dice": diff["per_frame_dice"]})
    return rows


def markdown(rows: list[dict], base: str, over: str = "seeds") -> str:
    """The rows as a table; ``over``: what the runs are paired by (seeds, or subset draws)."""
    from engine.evaluation.curve_report import p_text, signed_cell

    lines = [f"| arm − {base} | test frames | {over} | Dice (95 % CI) | p ({over}) | p (frames) | IoU |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['arm']} | {row['split']} ({row['frames']}) | {len(row['seeds'])} | "
                     f"{signed_cell(row['dice'])} | {p_text(row['dice']['p_value'])} | {p_text(row['per_frame_dice']['p_value'])} | "
                     f"{signed_cell(row['iou'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a fraction's results folder (results/<fraction>)")
    parser.add_argument("--base", required=True, help="the arm the others are compared with (real, copy-paste-x2, …)")
    parser.add_argument("--arms", nargs="+", required=True)
    parser.add_argument("--held-out", type=Path, required=True,
                        help="the generator's held-out frames, one name per line (its model folder's "
                        "held_out_frames.txt): the test frames it never trained on")
    parser.add_argument("--test", default="kvasir", help="the test set's name in the results (default kvasir)")
    args = parser.parse_args(argv)
    held_out = read_held_out(args.held_out)
    print(markdown(compare(args.results, args.base, args.arms, held_out, args.test), args.base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
