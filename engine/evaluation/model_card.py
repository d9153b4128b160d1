"""The figures of a judge bundle's MODEL_CARD.md — on its own validation frames and on any further folder (frames
it did or did not see), measured by the exported ONNX model itself (engine.judge.model), at each frame's own
resolution; the card's text is written by engine.training.model_card, the one writer of model cards.

For a folder of polyp-free frames the figure that matters is the false-positive rate: the share of frames
where the judge sees a polyp-sized blob (frame polyp score > threshold), and the share with any predicted
component at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.training.model_card import judge_card


@dataclass
class CardSet:
    label: str  # e.g. "polyps/ (a subset of Kvasir-SEG)"
    folder: Path
    note: str = ""
    names: set[str] | None = None  # only these frames (relative paths), None for all


def score_set(judge, card_set: CardSet) -> dict:
    from engine.evaluation import segdata
    from engine.judge.accuracy import score_frames, summarise

    _, entries = segdata.folder_entries(card_set.folder)
    if card_set.names is not None:
        entries = [e for e in entries if e[0] in card_set.names or Path(e[0]).name in card_set.names]
    rows = score_frames(lambda frames: [v.probability for v in judge.look_batch(frames)], entries,
                        threshold=judge.threshold)
    summary = summarise(rows)
    free = [r for r in rows if not r["polyp"]]
    if free:
        summary["false_positive_rate_score"] = sum(r["frame_score"] > judge.threshold for r in free) / len(free)
        summary["false_positive_rate_any_component"] = sum(bool(r["predicted_boxes"]) for r in free) / len(free)
    return summary


def write_judge_card(bundle_dir: str | Path, extra_sets: list[CardSet] | None = None, provider: str = "cpu",
                     training_notes: list[str] | None = None) -> tuple[Path, dict]:
    """Measure the bundle's judge on its own validation split and ``extra_sets``, then write its MODEL_CARD.md
    (engine.training.model_card); returns the card and the figures."""
    from engine.judge.model import Judge

    bundle_dir = Path(bundle_dir)
    judge = Judge.from_bundle(bundle_dir, provider=provider)
    training = judge.bundle.manifest.get("training", {})
    split = training.get("split", {})
    sets = [CardSet("own validation split", Path(training.get("data", "?")),
                    "held out by the split rule above, never trained on",
                    set(split.get("val_names", [])))] if split.get("val_names") else []
    sets += extra_sets or []
    figures = {s.label: score_set(judge, s) for s in sets}
    notes = [(s.label, s.note) for s in sets]
    return judge_card(bundle_dir, judge, figures, notes, training_notes), figures
