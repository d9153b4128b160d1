"""MODEL_CARD.md of a judge bundle: what it is, its data and their terms, the split, minutes of training, and its
figures — on its own validation frames and on any further folder (frames it did or did not see), measured by
the exported ONNX model itself (engine.judge.model), at each frame's own resolution.

For a folder of polyp-free frames the figure that matters is the false-positive rate: the share of frames
where the judge sees a polyp-sized blob (frame polyp score > threshold), and the share with any predicted
component at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.fileio import atomic_write_bytes

KVASIR_TERMS = ("Kvasir-SEG (Jha et al., MMM 2020; Vestre Viken Health Trust, Norway): free for academic and "
                "research use; commercial use needs the dataset authors' prior permission; cite the paper. A model "
                "trained on it is for research use under the same terms.")


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


def _line(label: str, s: dict) -> str:
    def f(v):
        return "–" if v is None else f"{v:.3f}"

    text = f"| {label} | {s['frames']} | {s['frames_with_polyp']} | {f(s['dice'])} | {f(s['iou'])} | {f(s['ap50'])} | {f(s['ap'])} |"
    if "false_positive_rate_score" in s:
        text += f" {f(s['false_positive_rate_score'])} / {f(s['false_positive_rate_any_component'])} |"
    else:
        text += " – |"
    return text


def write_judge_card(bundle_dir: str | Path, extra_sets: list[CardSet] | None = None, provider: str = "cpu",
                     training_notes: list[str] | None = None) -> tuple[Path, dict]:
    from engine.judge.model import Judge

    bundle_dir = Path(bundle_dir)
    judge = Judge.from_bundle(bundle_dir, provider=provider)
    manifest = judge.bundle.manifest
    training = manifest.get("training", {})
    split = training.get("split", {})
    data = training.get("data", "?")
    sets = [CardSet("own validation split", Path(data), "held out by the split rule above, never trained on",
                    set(split.get("val_names", [])))] if split.get("val_names") else []
    sets += extra_sets or []
    figures = {s.label: score_set(judge, s) for s in sets}
    architecture = manifest.get("architecture", {})
    terms = KVASIR_TERMS if "kvasir" in str(data).lower() else "the terms of the frames it was trained on apply."
    lines = [
        f"# Model card: {manifest['name']} (polyp judge)",
        "",
        "**An evaluation tool, not a diagnostic device.** It measures whether synthetic frames look like polyps to a "
        "segmenter trained on real ones (`main.py report` detectability, `--judge` in the batch job, `main.py "
        "evaluate`). It must never be used to find, rule out or show polyps in patients.",
        "",
        "## What it is",
        f"- {architecture.get('name', 'compact U-Net')}, widths {architecture.get('widths')}, "
        f"{architecture.get('parameters', 0) / 1e6:.2f} M parameters, trained from scratch (no pretrained weights)",
        f"- input: the whole frame resized to {judge.size}×{judge.size} (aspect squeezed), ImageNet normalisation; "
        f"output: polyp probability per pixel (mask = p > {judge.threshold}) and a {judge.dim}-d encoder embedding"
        + (f"; patch features ({manifest['patch_grid'][0]}×{manifest['patch_grid'][1]} patches × "
           f"{manifest['patch_dim']}-d) for the retrieval proposer" if manifest.get("patch_grid") else ""),
        f"- bundle id {judge.bundle_id}",
        "",
        "## Data and terms",
        f"- trained on {data}: {split.get('train_frames', '?')} frames, validated on {split.get('val_frames', '?')}",
        f"- split: {split.get('rule', '?')}; the validation frames are listed in bundle.json (training.split.val_names)",
        f"- terms: {terms}",
        "",
        "## Training",
        f"- {training.get('steps', '?')} optimiser steps of {training.get('batch_size', '?')} frames at "
        f"{training.get('size', '?')}², {training.get('train_minutes', '?')} minutes of training (wall clock) on a CPU with "
        f"{training.get('threads', '?')} thread(s) (shared with other work), lr {training.get('lr', '?')} cosine; "
        f"weights kept: {training.get('weights', '?')}"
        + (f" (step {training.get('best_validation_at_training_size', {}).get('step')})"
           if training.get("best_validation_at_training_size") else ""),
        *[f"- {note}" for note in training_notes or []],
        "- augmentation: random crops (60–100 % of the area; 15 % chosen to miss the polyp), flips, 90° rotations, "
        "brightness / contrast / colour gain; loss BCE + soft Dice; early stopping on validation Dice",
        "",
        "## Figures (the exported ONNX model, each frame at its own resolution)",
        "",
        "| frames | n | with polyp | Dice | IoU | AP50 | AP@[.5:.95] | false positives (score / any) |",
        "|---|---|---|---|---|---|---|---|",
        *[_line(label, s) for label, s in figures.items()],
        "",
        *[f"- {s.label}: {s.note}" for s in sets if s.note],
        "- Dice and IoU: per frame, averaged (1 for a polyp-free frame where nothing is predicted). AP: COCO bbox AP "
        "of the predicted components' boxes (scored by mean probability) against the truth components' boxes. "
        "False positives on polyp-free frames: share of frames whose polyp score (peak of the smoothed probability) "
        "exceeds the threshold / share with any predicted component.",
        "",
        "## Limits",
        "- Trained on one public dataset (one hospital, one kind of endoscope); Kvasir-SEG has near-duplicate frames "
        "of the same lesion, so its own validation split is optimistic. Frames from elsewhere may score worse.",
        "- Trained on polyp frames only (polyp-free crops of them are its only negatives): expect false positives on "
        "polyp-free frames, above all with stool, bubbles or instrument overlays.",
        "- A small network at low resolution: small and flat polyps are missed more often.",
        "",
    ]
    card = atomic_write_bytes(bundle_dir / "MODEL_CARD.md", "\n".join(lines).encode("utf-8"))
    return card, figures
