#!/usr/bin/env python3
"""Issue 25's scorecard for a candidate default model, beside today's default, in one command (a script, not a test).

    python tests/benchmarks/candidate_scorecard.py --bundle .bench/compact-96 --out /tmp/scorecard-96 \\
        [--held-out training_runs/compact/model/held_out_frames.txt] [--per-bin 16] [--threads 2]

Runs the four measures on the same held-out Kvasir-SEG frames, each reusing whatever an earlier call already made
in OUT (so a stopped call resumes):

- size_bins.py: per size bin, the judge's found rate of generated polyps over its rate on real polyps of that size
  (goal ≥ 0.8 in every bin), the detail ratio (texture) next to real polyps', the generated size histogram, and
  removals the judge still sees;
- attribute_readback.py (only for a bundle that takes attributes): each asked colour and surface read back by the
  captioner, over its rate when nothing was asked (goal ≥ 2);
- removal_quality.py: removals' darkness and detail against the mucosa ring, per box size (goal: no dark smudge and
  no blur at boxes up to 40 % of the frame);
- bench_compact_speed.py: s/image at a median-size polyp (goal ≤ 1 s at 2 threads) and the ratio to the default.

Prints the scorecard (goal met or not, per line) and writes OUT/scorecard.json. Run it with the machine otherwise
idle: the timings are only comparable so. Minutes to an hour, depending on --per-bin and the bundle's speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_HELD_OUT = REPO_ROOT / "training_runs" / "compact" / "model" / "held_out_frames.txt"
FOUND_GOAL, READBACK_GOAL, SECONDS_GOAL, REMOVAL_UP_TO = 0.8, 2.0, 1.0, 0.40


def _run(script: str, arguments: list[str]) -> None:
    command = [sys.executable, str(HERE / script), *arguments]
    print("$", " ".join(command[1:]), flush=True)
    completed = subprocess.run(command, cwd=REPO_ROOT)
    if completed.returncode != 0:
        raise SystemExit(f"{script} failed (exit {completed.returncode})")


def takes_attributes(bundle: str) -> bool:
    from engine.bundle.format import find_bundle

    folder = find_bundle(bundle)
    return bool(json.loads((folder / "bundle.json").read_text(encoding="utf-8")).get("attributes"))


def scorecard(bundle: str, default: str, size_bins: dict, readback: dict | None, removal: dict, speed: dict) -> dict:
    """The goals of issue 25, each with the candidate's figure (and the default model's where measured)."""
    lines = []
    for name in (default, bundle):
        summary = size_bins["bundles"][name]["summary"]
        for row in summary["by_bin"]:
            if row["ratio"] is None:
                continue
            lines.append({"bundle": name, "measure": f"judge finds, {row['bin']} % of frame, over real",
                          "value": row["ratio"], "goal": f">= {FOUND_GOAL}", "met": row["ratio"] >= FOUND_GOAL,
                          "detail": f"{row['found_rate']:.0%} of {row['variants']} vs real {row['real_found_rate']:.0%}"
                                    f"; detail ratio {row['detail_ratio']}"})
        histogram = summary["size_histogram"]
        lines.append({"bundle": name, "measure": "sizes drawn (median % of frame), generated vs real",
                      "value": histogram["generated_percent"].get("median"), "goal": "near real",
                      "met": None, "detail": f"real median {histogram['real_percent'].get('median')}"})
    if readback is not None:
        for row in readback["rows"]:
            if row["attribute"] not in ("colour", "surface"):
                continue
            ratio = row["ratio"]
            lines.append({"bundle": bundle, "measure": f"asked {row['attribute']} '{row['asked']}' read back / chance",
                          "value": ratio, "goal": f">= {READBACK_GOAL}",
                          "met": None if ratio is None else ratio >= READBACK_GOAL,
                          "detail": f"{row['read_back']:.0%} asked vs {row['when_not_asked']:.0%} not asked"})
    for name, result in removal.items():
        for row in result["by_size"]:
            if row["removals"] == 0 or row["area_from"] >= REMOVAL_UP_TO:
                continue
            clean = row["smudged"] == 0 and row["blurred"] == 0
            lines.append({"bundle": name, "measure": f"removal at boxes {row['area_from']:.2f}-{row['area_to']:.2f}",
                          "value": f"smudged {row['smudged']:.0%}, blurred {row['blurred']:.0%}", "goal": "none",
                          "met": clean, "detail": f"n {row['removals']}, darkness {row['darkness']:.1f}, "
                                                  f"detail {row['detail']:.2f}"})
    for row in speed["rows"]:
        lines.append({"bundle": row["bundle"], "measure": f"s/image at {speed['threads']} threads",
                      "value": round(row["median_s"], 3), "goal": f"<= {SECONDS_GOAL}",
                      "met": row["median_s"] <= SECONDS_GOAL, "detail": f"{row['ratio_to_default']}x the default"})
    return {"bundle": bundle, "default": default, "lines": lines}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, help="the candidate bundle (folder or name)")
    parser.add_argument("--default", default="polypforge-compact", help="what it is compared with")
    parser.add_argument("--data", type=Path, default=DATA / "kvasir-seg")
    parser.add_argument("--removal-frames", type=Path, default=DATA / "polyps")
    parser.add_argument("--held-out", type=Path, default=DEFAULT_HELD_OUT)
    parser.add_argument("--per-bin", type=int, default=16)
    parser.add_argument("--readback-limit", type=int, default=24)
    parser.add_argument("--speed-images", type=int, default=6)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    out = args.out.resolve()
    common = ["--threads", str(args.threads)]
    bundles = f"{args.default},{args.bundle}"
    _run("size_bins.py", ["--data", str(args.data), "--held-out", str(args.held_out), "--bundles", bundles,
                          "--per-bin", str(args.per_bin), "--seed", str(args.seed), "--out", str(out / "size-bins"),
                          *common])
    readback = None
    if takes_attributes(args.bundle):
        _run("attribute_readback.py", ["--bundle", args.bundle, "--frames", str(args.data), "--held-out",
                                       str(args.held_out), "--limit", str(args.readback_limit), "--seed",
                                       str(args.seed), "--out", str(out / "readback"), *common])
        readback = json.loads((out / "readback" / "readback.json").read_text(encoding="utf-8"))
    _run("removal_quality.py", ["--frames", str(args.removal_frames), "--bundles", bundles,
                                "--out", str(out / "removal"), *common])
    _run("bench_compact_speed.py", ["--bundles", args.bundle, "--images", str(args.speed_images),
                                    "--json", str(out / "speed.json"), *common])
    card = scorecard(args.bundle, args.default,
                     json.loads((out / "size-bins" / "size_bins.json").read_text(encoding="utf-8")), readback,
                     json.loads((out / "removal" / "removal_quality.json").read_text(encoding="utf-8")),
                     json.loads((out / "speed.json").read_text(encoding="utf-8")))
    (out / "scorecard.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    print(f"\nissue 25 scorecard: {args.bundle} (beside {args.default})")
    for line in card["lines"]:
        mark = {True: "met", False: "NOT met", None: "—"}[line["met"]]
        print(f"  {Path(line['bundle']).name:28s} {line['measure']:52s} {str(line['value']):26s} "
              f"goal {line['goal']:8s} {mark:8s} {line['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
