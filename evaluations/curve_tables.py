"""A learning curve's report.json as Markdown tables (for docs and notes): one table per fraction and test set
(Dice, IoU, AP50 with 95 % CIs, the paired difference to real with its CI and p-values, the polyp-free frames'
false-positive rate, minutes of training) and the Dice-by-polyp-size table.

    python evaluations/curve_tables.py evaluations/kvasir-curve/report.json [--test kvasir]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.evaluation.curve_report import p_text, signed_cell  # noqa: E402


def _ci(stats: dict | None) -> str:
    low, high = (stats or {}).get("ci95") or (None, None)
    if low is None:
        return _mean(stats)
    return f"{stats['mean']:.3f} [{low:.3f}, {high:.3f}]"


def _mean(stats: dict | None) -> str:
    return "–" if not stats or stats.get("mean") is None else f"{stats['mean']:.3f}"


def _signed_mean(stats: dict | None) -> str:
    """A difference's mean alone (the CI is in the Dice column): "+0.040", "–" without one."""
    return "–" if not stats or stats.get("mean") is None else f"{stats['mean']:+.3f}"


def fraction_table(point: dict, test: str) -> list[str]:
    lines = [f"**{point['subset_frames']} real frames** (fraction {point['fraction']:g}: {point['train_frames']} to "
             f"train on, {point['val_frames']} for early stopping), test set {test}:", "",
             "| arm | runs | Dice [95 % CI] | IoU | AP50 | Δ Dice to real [CI] | p seeds / frames | Δ IoU | Δ AP50 "
             "| FP normals | train min/run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in point["arms"].items():
        if not entry["runs"]:
            lines.append(f"| {name} | 0 | not run | | | | | | | | |")
            continue
        scores = entry["tests"].get(test, {})
        diff = point["differences"].get(name, {}).get(test) if name != "real" else None
        fp = entry.get("normals_false_positive_rate")
        minutes = entry["train_minutes"]
        cells = [name, str(entry["runs"]), _ci(scores.get("dice")), _mean(scores.get("iou")), _mean(scores.get("ap50"))]
        if diff:
            cells += [signed_cell(diff["dice"]), f"{p_text(diff['dice'].get('p_value'))} / "
                      f"{p_text(diff.get('per_frame_dice', {}).get('p_value'))}", _signed_mean(diff["iou"]),
                      _signed_mean(diff["ap50"])]
        else:
            cells += ["—"] * 4
        cells += ["–" if not fp else f"{fp['mean']:.2f}", f"{min(minutes):.1f}–{max(minutes):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def size_table(point: dict, test: str) -> list[str]:
    breakdown = point.get("by_size", {}).get(test)
    if not breakdown:
        return []
    bins = [b for b in breakdown["bins"] if breakdown["frames"].get(b)]
    lines = [f"Dice by the share of the frame its polyps cover ({point['subset_frames']} real frames; frames per bin), "
             "real's Dice and each arm's Δ to real:", "",
             "| arm | " + " | ".join(f"{b} % ({breakdown['frames'][b]})" for b in bins) + " |",
             "|---|" + "---|" * len(bins)]
    real = breakdown["arms"].get("real", {})
    for name, cellsets in breakdown["arms"].items():
        cells = []
        for b in bins:
            mine = (cellsets.get(b) or {}).get("dice", {}).get("mean")
            base = (real.get(b) or {}).get("dice", {}).get("mean")
            if mine is None:
                cells.append("–")
            elif name == "real":
                cells.append(f"{mine:.3f}")
            else:
                cells.append("–" if base is None else f"{mine - base:+.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("--test", default=None, help="the test set (default: every one)")
    args = parser.parse_args()
    report = json.loads(args.report.read_text(encoding="utf-8"))
    tests = [args.test] if args.test else list(report["tests"])
    for test in tests:
        for point in report["points"]:
            print("\n".join(fraction_table(point, test)), end="\n\n")
            print("\n".join(size_table(point, test)), end="\n\n")
    for verdict in report["verdicts"]:
        if verdict["test"] in tests:
            print("-", verdict["text"])
    for note in report.get("notes", []):
        print("- note:", note)
    print(f"\nruns done {report['runs_done']} of {report['runs_planned']} planned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
