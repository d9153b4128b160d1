#!/usr/bin/env python3
"""make_judge_card.py [BUNDLE] [NOTE …]: write exported_models/polyp-judge/MODEL_CARD.md, measuring the committed judge on ../shared/data:
its own Kvasir-SEG validation split, the polyps/ subset (split into frames it trained on and frames it did
not), and the normal/ frames (unseen, polyp-free: the false-positive rate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.evaluation.model_card import CardSet, write_judge_card  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def main() -> int:
    bundle = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "exported_models" / "polyp-judge"
    data = SHARED if SHARED.is_dir() else Path("/work/shared/data")
    manifest = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    val = {Path(n).name for n in manifest["training"]["split"]["val_names"]}
    polyps = sorted(p.name for p in (data / "polyps" / "images").iterdir())
    sets = [
        CardSet("polyps/, frames in its validation split", data / "polyps",
                "polyps/ is a subset of Kvasir-SEG: these frames were held out (not trained on)",
                {n for n in polyps if n in val}),
        CardSet("polyps/, frames it trained on", data / "polyps",
                "seen in training: an upper bound, not a measure", {n for n in polyps if n not in val}),
        CardSet("normal/ (Nerthus, polyp-free, never seen)", data / "normal",
                "24 frames from another dataset with no polyp: only false positives can happen here"),
    ]
    notes = sys.argv[2:]  # e.g. how much CPU time the run had, when the machine was shared
    card, figures = write_judge_card(bundle, sets, training_notes=notes)
    print(json.dumps(figures, indent=1))
    print(f"wrote {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
