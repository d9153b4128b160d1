"""A folder of subset draws (DRAWS/draw-K/results/<fraction>/, as `main.py evaluate --subset-draws N` writes and
evaluations/kvasir_curve.py's phases 20–29 collect): the engine's comparison over the draws
(engine.evaluation.subset_draws: Dice per draw, each arm against real and copy-paste paired by draw, per polyp size),
and beside it each arm against each base on the test frames the generator never trained on and on those it did
(evaluations/curve_seen_unseen.py: the project's models trained on part of Kvasir-SEG's test split).

    python evaluations/curve_draws.py evaluations/kvasir-curve-draws --draws 10 --fraction 0.05 \\
        --arm copy-paste-x2=evaluations/kvasir-curve-jobs/copy-paste-x2.toml \\
        --arm default-judged-x4=evaluations/kvasir-curve-jobs/synthetic-judged-x4.toml \\
        --held-out training_runs/compact-anneal/model/held_out_frames.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from curve_seen_unseen import compare_runs, markdown, read_held_out  # noqa: E402


def draw_settings(root: Path, draws: int, fraction: float, arms: dict[str, Path], test: str = "kvasir",
                  seeds: int = 1):
    """The CurveSettings that name the draws' runs (nothing is trained or read from the frames: train and test are
    only names here)."""
    from engine.evaluation.curve_plan import CurveSettings

    return CurveSettings(train=Path("."), tests={test: Path(".")}, out=Path(root), arms=dict(arms),
                         fractions=(float(fraction),), seeds=seeds, subset_draws=draws)


def summary(settings, held_out: set[str], versus: tuple[tuple[str, str], ...] = ()) -> str:
    """The engine's summary (markdown), then the seen/unseen split of every comparison it makes, and of each (base,
    arm) in ``versus``: comparisons the engine does not make (a generated arm against another, paired by draw)."""
    from engine.evaluation.subset_draws import draw_runs, read_results, summarize
    from engine.evaluation.subset_draws import markdown as engine_markdown

    results = read_results(settings)
    data = summarize(settings, results)
    lines = [engine_markdown(data).rstrip("\n")]
    for point in data["points"]:
        runs = {arm: draw_runs(results, point["fraction"], arm, point["test"]) for arm in data["arms"]}
        for comparison in point["comparisons"]:
            base, arm, draws = comparison["base"], comparison["arm"], set(comparison["draws"])
            lines += split_section(runs, base, arm, draws, held_out, f"## {arm} − {base}: test frames the generator "
                                   f"never trained on, and the others (fraction {point['fraction']:g}, test set "
                                   f"{point['test']})")
        for base, arm in versus:
            draws = set(runs[base]) & set(runs[arm])
            if len(draws) >= 2:  # fewer: nothing to pair yet
                lines += split_section(runs, base, arm, draws, held_out, f"## {arm} − {base}, paired by draw: all test "
                                       "frames, those the generator never trained on, and the others (fraction "
                                       f"{point['fraction']:g}, test set {point['test']})")
    return "\n".join(lines) + "\n"


def split_section(runs: dict, base: str, arm: str, draws: set[int], held_out: set[str], title: str) -> list[str]:
    """The lines of one comparison's section: ``arm`` against ``base`` over ``draws``, on all test frames and split
    by the generator's held-out frames."""
    only = lambda name: {d: r for d, r in runs[name].items() if d in draws}  # noqa: E731
    return ["", title, "", markdown(compare_runs(only, base, [arm], held_out), base, over="draws")]


def _arm(text: str) -> tuple[str, Path]:
    name, _, job = text.partition("=")
    if not name or not job:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=JOB.toml")
    return name, Path(job)


def _pair(text: str) -> tuple[str, str]:
    base, _, arm = text.partition("=")
    if not base or not arm:
        raise argparse.ArgumentTypeError(f"{text!r}: give BASE=ARM")
    return base, arm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the folder of the draws (draw-K/results/<fraction>/…)")
    parser.add_argument("--draws", type=int, required=True, help="how many draws were planned (1 … N)")
    parser.add_argument("--fraction", type=float, required=True, help="the fraction, e.g. 0.05")
    parser.add_argument("--arm", type=_arm, action="append", required=True,
                        help="NAME=JOB.toml of each arm beside real (the job says whether it is a copy-paste base)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per draw (default 1)")
    parser.add_argument("--held-out", type=Path, required=True,
                        help="the generator's held-out frames (its model folder's held_out_frames.txt)")
    parser.add_argument("--test", default="kvasir", help="the test set's name in the results (default kvasir)")
    parser.add_argument("--versus", type=_pair, action="append", default=[], metavar="BASE=ARM",
                        help="also ARM against BASE (two of the arms), paired by draw (repeatable)")
    args = parser.parse_args(argv)
    settings = draw_settings(args.root, args.draws, args.fraction, dict(args.arm), args.test, args.seeds)
    unknown = {name for pair in args.versus for name in pair} - set(settings.arm_names())
    if unknown:
        parser.error(f"--versus names {', '.join(sorted(unknown))}, not among the arms")
    print(summary(settings, read_held_out(args.held_out), tuple(args.versus)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
