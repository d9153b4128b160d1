"""A comparison repeated over independent real subsets (subset draws), not over training seeds of one subset.

Every run of the learning curve at a fraction trains on the same hash-chosen subset (its seeds vary the training, not
the frames), so a p over seeds speaks of those frames only. `main.py evaluate --subset-draw K` draws another subset
of the same size; evaluations/kvasir_curve.py runs one seed per draw into DRAWS/draw-K/results/<fraction>/. This pairs
each arm with a base arm draw by draw (the mean Dice on the test frames per draw; its 95 % CI, a paired t-test over
draws, the Wilcoxon test over test frames of the Dice averaged over draws: engine.evaluation.evaluation_report.paired),
on all test frames, the generator's unseen ones and its seen ones (evaluations/curve_seen_unseen.py), and lists each
draw's Dice and how many draws the arm won.

    python evaluations/curve_draws.py evaluations/kvasir-curve-draws --fraction 0.05 \\
        --arms default-judged-x4 --bases real copy-paste-x2 \\
        --held-out training_runs/compact-anneal/model/held_out_frames.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from curve_seen_unseen import compare_runs, markdown, read_held_out  # noqa: E402

PREFIX = "draw-"


def draw_folders(root: Path) -> dict[int, Path]:
    """draw number → its folder (ROOT/draw-K), in order."""
    found = {}
    for folder in Path(root).glob(f"{PREFIX}*"):
        number = folder.name[len(PREFIX):]
        if folder.is_dir() and number.isdigit():
            found[int(number)] = folder
    return dict(sorted(found.items()))


def read_draws(root: Path, fraction: str, arm: str, test: str = "kvasir", seed: int = 0) -> dict[int, dict]:
    """draw → the arm's run of that draw on ``test`` (seed ``seed``), for every draw where it has finished."""
    runs = {}
    for draw, folder in draw_folders(root).items():
        path = folder / "results" / fraction / f"{arm}-seed{seed}.json"
        if path.is_file():
            runs[draw] = json.loads(path.read_text(encoding="utf-8"))["tests"][test]
    return runs


def paired_draws(root: Path, fraction: str, arms: list[str], test: str = "kvasir") -> list[int]:
    """The draws where every one of ``arms`` has finished."""
    have = [set(read_draws(root, fraction, arm, test)) for arm in arms]
    return sorted(set.intersection(*have)) if have else []


def summary(root: Path, fraction: str, arms: list[str], bases: list[str], held_out: set[str],
            test: str = "kvasir", planned: int | None = None) -> str:
    """The markdown summary: Dice per draw and arm, then each arm against each base over the paired draws."""
    everyone = list(dict.fromkeys([*bases, *arms]))
    runs = {arm: read_draws(root, fraction, arm, test) for arm in everyone}
    draws = paired_draws(root, fraction, everyone, test)
    lines = [f"Draws finished with every arm: {len(draws)}" + (f" of {planned} planned" if planned else "")
             + f" ({', '.join(map(str, draws)) or 'none'}); test set {test}, fraction {fraction}, one seed per draw.",
             "", "| draw | " + " | ".join(everyone) + " |", "|---" * (len(everyone) + 1) + "|"]
    for draw in draws:
        lines.append(f"| {draw} | " + " | ".join(f"{runs[arm][draw]['summary']['dice']:.3f}" for arm in everyone)
                     + " |")
    if len(draws) < 2:
        return "\n".join(lines + ["", "Fewer than two draws with every arm: no comparison yet."]) + "\n"
    only = lambda arm: {draw: runs[arm][draw] for draw in draws}  # noqa: E731
    for base in bases:
        others = [arm for arm in arms if arm != base]
        rows = compare_runs(only, base, others, held_out)
        wins = [f"{arm}: {sum(runs[arm][d]['summary']['dice'] > runs[base][d]['summary']['dice'] for d in draws)} "
                f"of {len(draws)}" for arm in others]
        lines += ["", markdown(rows, base, over="draws"), "", f"Draws won against {base} (all test frames): "
                  + "; ".join(wins) + ".", "", by_size(only, base, others, test)]
    return "\n".join(lines) + "\n"


def by_size(runs_of, base: str, arms: list[str], test: str = "kvasir") -> str:
    """Per size bin of the test frames' polyps (engine.evaluation.curve_report.size_breakdown): each arm's mean Dice
    over the draws and its difference from ``base`` paired by draw, with its 95 % CI."""
    from engine.evaluation.curve_report import size_breakdown

    results = {arm: {draw: {"tests": {test: record}} for draw, record in runs_of(arm).items()} for arm in [base, *arms]}
    table = size_breakdown(results, [base, *arms], test, base=base)
    lines = [f"| polyp size (share of frame) | test frames | {base} | " + " | ".join(f"{arm} (Δ, 95 % CI)" for arm in arms)
             + " |", "|---" * (len(arms) + 3) + "|"]
    for label in table["bins"]:
        cells = []
        for arm in arms:
            entry = table["arms"][arm][label]
            difference = entry.get("difference") or {}
            low, high = difference.get("ci95") or (None, None)
            interval = f" [{low:+.3f}, {high:+.3f}]" if low is not None else ""
            cells.append(f"{entry['dice']['mean']:.3f} ({difference.get('mean', 0.0):+.3f}{interval})")
        lines.append(f"| {label} | {table['frames'][label]} | {table['arms'][base][label]['dice']['mean']:.3f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the folder of the draws (draw-K/results/<fraction>/…)")
    parser.add_argument("--fraction", required=True, help="the fraction's folder name, e.g. 0.05")
    parser.add_argument("--arms", nargs="+", required=True, help="the arms compared with each base")
    parser.add_argument("--bases", nargs="+", default=["real"], help="the arms they are compared with (default real)")
    parser.add_argument("--held-out", type=Path, required=True,
                        help="the generator's held-out frames (its model folder's held_out_frames.txt)")
    parser.add_argument("--test", default="kvasir", help="the test set's name in the results (default kvasir)")
    args = parser.parse_args(argv)
    print(summary(args.root, args.fraction, args.arms, args.bases, read_held_out(args.held_out), args.test), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
