"""The model card every trained model carries: what it is, its data and their terms, its training, figures, limits.

- ``write_model_card``: a generator trained by ``main.py train``, from its run folder: MODEL_CARD.md in the run
  folder and the model folder (``attach_model_card`` puts it into the bundle) plus model_card.json with the same
  facts for tools;
- ``write_judge_card``: the judge (``main.py train-judge``), from its bundle's manifest and the figures the lab
  measured with the exported model (engine.evaluation.model_card), as MODEL_CARD.md in the bundle.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

from engine.bundle.training_frames import FILE_NAME, parse_lines, write_training_frames
from engine.errors import PolypForgeError
from engine.fileio import atomic_write_bytes
from engine.training.run_files import LOG, RUN_RECORD, read_log, read_record

KNOWN_TERMS = {
    "kvasir": "Kvasir-SEG (Jha et al., MMM 2020; Vestre Viken Health Trust, Norway): free for research and "
              "educational use only; commercial use needs the authors' permission; cite the paper.",
    "bowel": "Nerthus (Pogorelov et al., MMSys 2017; bowel-preparation quality frames): research and educational "
             "use only; cite the paper.",
    "nerthus": "Nerthus (Pogorelov et al., MMSys 2017): research and educational use only; cite the paper.",
}

KVASIR_TERMS = ("Kvasir-SEG (Jha et al., MMM 2020; Vestre Viken Health Trust, Norway): free for academic and "
                "research use; commercial use needs the dataset authors' prior permission; cite the paper. A model "
                "trained on it is for research use under the same terms.")


def _terms_for(sources: list[str], frames: list[str]) -> list[str]:
    text = " ".join(sources + frames).lower()
    terms = [value for key, value in KNOWN_TERMS.items() if key in text]
    seen, unique = set(), []
    for term in terms:
        if term not in seen:
            seen.add(term)
            unique.append(term)
    return unique or ["the curator's own frames: their terms apply"]


def _earlier_training(init_from: str | None) -> dict | None:
    """What the run a warm start came from had already trained (its card's steps and hours, its own earlier stages
    included), so a chain of runs states its whole cost; None when that run left no card."""
    if not init_from:
        return None
    for folder in (Path(init_from), Path(init_from).parent):
        try:
            training = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))["training"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return {"from": str(init_from), "steps": int(training.get("steps_in_all", training["steps"])),
                "hours": float(training.get("hours_in_all", training["hours"]))}
    return None


def _earlier_training_frames(init_from: str | None) -> dict[str, str]:
    """sha256 → name of the frames the warm start's model trained on (its training_frames.txt); {} without one."""
    if not init_from:
        return {}
    path = Path(init_from) / FILE_NAME
    try:
        return parse_lines(path.read_text(encoding="utf-8"), path)
    except (OSError, PolypForgeError):
        return {}


def _relative_to_working_folder(value, root: Path | None = None):
    """Absolute paths inside the working folder written relative to it (recursively through dicts and lists), so a
    committed card reads the same on every clone instead of naming the machine it was trained on."""
    root = root or Path.cwd()
    if isinstance(value, dict):
        return {k: _relative_to_working_folder(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative_to_working_folder(v, root) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        try:
            return Path(value).relative_to(root).as_posix()
        except ValueError:
            return value
    return value


def write_card(lines: list[str], *paths: Path) -> Path:
    """The card's lines as MODEL_CARD.md text at each of ``paths`` (atomically); returns the first."""
    text = "\n".join(lines).encode("utf-8")
    for path in paths:
        atomic_write_bytes(path, text)
    return Path(paths[0])


def write_model_card(run_dir: Path, model_dir: Path, task, config, result, corpus, extra_figures: dict | None = None) -> Path:
    info = corpus.describe()
    log_rows = read_log(Path(run_dir) / LOG)
    losses = [r["loss"] for r in log_rows if "loss" in r]
    validations = [r for r in log_rows if "val_loss" in r]
    samples = sorted((Path(run_dir) / "samples").glob("step-*.png"))
    provenance = (read_record(Path(run_dir) / RUN_RECORD) or {}).get("provenance", {})
    init_from = provenance.get("init_from")
    earlier = _earlier_training(init_from)
    provenance = _relative_to_working_folder(provenance)
    extra_figures = _relative_to_working_folder(extra_figures or {})
    held_out_list = Path(model_dir) / "held_out_frames.txt"
    atomic_write_bytes(held_out_list, ("\n".join(info["held_out"]) + "\n").encode("utf-8"))
    # what it trained on, by content — this run's frames and those of the model it was warm-started from — so an
    # evaluation tells the test frames it has seen from new ones (the export copies the list into the bundle)
    trained = _earlier_training_frames(init_from)
    trained.update({f.sha256: f.rel for f in corpus.train if getattr(f, "sha256", "")})
    write_training_frames(model_dir, trained.items())
    facts = {
        "model": task.name,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {"sources": info["sources"], "train_frames": info["train_frames"], "train_polyps": info["train_polyps"],
                 "held_out_frames": info["held_out_frames"], "held_out_list": held_out_list.name,
                 "terms": _terms_for(info["sources"], [f.rel for f in corpus.train + corpus.held_out])},
        "training": {"steps": result.step, "samples_seen": result.step * task.samples_per_step() * config.grad_accum,
                     "hours": round(result.train_seconds / 3600.0, 3), "device": _device(),
                     "optimizer": f"AdamW lr {config.lr} ({config.lr_schedule}, warmup {config.warmup_steps}), "
                                  f"EMA {config.ema_decay}",
                     "task": _relative_to_working_folder(task.describe().get("config", {}))},
        "figures": {"final_training_loss": round(losses[-1], 5) if losses else None,
                    "best_validation": result.best_metrics or None,
                    "last_validation": validations[-1] if validations else None, **(extra_figures or {})},
        "sample_grid": samples[-1].name if samples else None,
        "provenance": provenance,
    }
    if earlier:
        earlier["from"] = _relative_to_working_folder(earlier["from"])
        facts["training"]["earlier"] = earlier
        facts["training"]["steps_in_all"] = earlier["steps"] + result.step
        facts["training"]["hours_in_all"] = round(earlier["hours"] + facts["training"]["hours"], 3)
    lines = [
        f"# Model card: {task.name}",
        "",
        "## What it is",
        _what_it_is(task),
        "",
        "## Data",
        *[f"- {s}" for s in info["sources"]],
        f"- trained on {info['train_frames']} frames ({info['train_polyps']} polyps); {info['held_out_frames']} frames "
        f"held out by a hash of their file name and never trained on ({held_out_list.name})",
        "- terms: " + " ".join(facts["data"]["terms"]),
        "",
        "## Training",
        f"- {result.step} optimiser steps, {facts['training']['samples_seen']} training samples, "
        f"{facts['training']['hours']} h on {facts['training']['device']}",
        f"- {facts['training']['optimizer']}",
        *([f"- warm start from {provenance['init_from']}"] if provenance.get("init_from") else []),
        *([f"- in all, with the {earlier['steps']} steps and {earlier['hours']} h it started from: "
           f"{facts['training']['steps_in_all']} steps, {facts['training']['hours_in_all']} h"] if earlier else []),
        f"- settings: `{json.dumps(_shortened(facts['training']['task']), sort_keys=True)}`",
        "",
        "## Figures",
        f"- final training loss (mean of the last logged window): {facts['figures']['final_training_loss']}",
        f"- best validation: {facts['figures']['best_validation']}",
        *[f"- {k}: {v}" for k, v in (extra_figures or {}).items()],
        f"- latest sample grid: samples/{facts['sample_grid']}" if samples else "- no sample grid",
        "",
        "## Limits — what it must not be used for",
        "- It makes synthetic training images for research on polyp detectors and segmenters. It is not a "
        "medical device and must never be used to diagnose, to show a patient anything, or as evidence of a finding.",
        "- Synthetic frames may repeat features of the training frames (memorisation): check generated sets with "
        "`main.py report` before sharing them, and never present them as real patient data.",
        "- Trained on one public dataset from one hospital: frames from other endoscopes, hospitals, light settings "
        "or resolutions may give worse results; measure on your own frames (`main.py report`).",
        "- The data's terms above carry over to the model and to what it generates.",
        "",
    ]
    card = write_card(lines, Path(run_dir) / "MODEL_CARD.md", Path(model_dir) / "MODEL_CARD.md")
    atomic_write_bytes(Path(run_dir) / "model_card.json", (json.dumps(facts, indent=1, default=str) + "\n").encode("utf-8"))
    return card


def attach_model_card(bundle: Path, card: Path) -> None:
    """Copy the card into an exported bundle and name it in the manifest, so the bundle's hashes cover it."""
    import shutil

    from engine.bundle.format import MANIFEST_NAME, write_manifest

    shutil.copyfile(card, Path(bundle) / "MODEL_CARD.md")
    manifest = json.loads((Path(bundle) / MANIFEST_NAME).read_text(encoding="utf-8"))
    write_manifest(Path(bundle), {**manifest, "model_card": "MODEL_CARD.md"})


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU ({torch.cuda.get_device_name(0)})"
    except Exception:  # noqa: BLE001
        pass
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _what_it_is(task) -> str:
    if task.name == "compact-inpaint":
        return ("PolypForge's compact polyp inpainting model: a pixel-space U-Net trained from scratch with Polyp-Gen's "
                "spatial-aware pairs (prompt Polyp: a boundary-enhanced pseudo mask in a polyp's box; prompt Normal: a "
                "free region of mucosa) on crops around the region, v-prediction with min-SNR weighting and a "
                "lesion-guided loss. It inpaints the region around a mask (engine.pipelines.compact).")
    if task.name == "sd-inpaint":
        return ("A Stable-Diffusion inpainting model fine-tuned with Polyp-Gen's spatial-aware training (BPM masks, "
                "lesion-guided loss); its U-Net was trained, its VAE and text encoder frozen.")
    if task.name == "ccis-controlnet":
        return ("CCIS-Diff's ControlNet: a trainable copy of an SD-1.5 U-Net's encoder conditioned on the polyp mask "
                "(with blur-mask weighting and text-aware attention unless ablated) and the frame's clinical caption; "
                "the base model was frozen. It runs with that base as an sd-controlnet bundle.")
    if task.name == "ccis-compact-controlnet":
        return ("CCIS-Diff's ControlNet on PolypForge's compact polyp model: a trainable copy of the compact U-Net's "
                "stem, down path and mid (zero 1×1 convolutions into the frozen base's skips), conditioned on the "
                "polyp mask (with blur-mask weighting unless ablated) and the frame's clinical caption (a word "
                "vocabulary and a small transformer, text-aware attention unless ablated). The base was frozen; the "
                "pair runs as a pixel-controlnet bundle (engine.pipelines.compact_controlnet).")
    return f"A model trained by PolypForge's trainer (task {task.name})."


def judge_card(bundle_dir: Path, judge, figures: dict[str, dict], notes: list[tuple[str, str]],
               training_notes: list[str] | None = None) -> Path:
    """MODEL_CARD.md of a judge bundle (``judge``: its engine.judge.model.Judge): what it is, its data and terms,
    its training (from the manifest), and ``figures`` ({label: summary} measured on each set of frames; ``notes``:
    (label, what that set is))."""
    manifest = judge.bundle.manifest
    training = manifest.get("training", {})
    split = training.get("split", {})
    data = training.get("data", "?")
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
        *[_figures_row(label, s) for label, s in figures.items()],
        "",
        *[f"- {label}: {note}" for label, note in notes if note],
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
    return write_card(lines, Path(bundle_dir) / "MODEL_CARD.md")


def _figures_row(label: str, s: dict) -> str:
    def f(v):
        return "–" if v is None else f"{v:.3f}"

    text = f"| {label} | {s['frames']} | {s['frames_with_polyp']} | {f(s['dice'])} | {f(s['iou'])} | {f(s['ap50'])} | {f(s['ap'])} |"
    if "false_positive_rate_score" in s:
        text += f" {f(s['false_positive_rate_score'])} / {f(s['false_positive_rate_any_component'])} |"
    else:
        text += " – |"
    return text


def _shortened(value, longest: int = 16):
    """Settings as the card's one line shows them: a list longer than ``longest`` (a schedule's 1,000 trained betas)
    as its length, first and last value; model_card.json keeps every value."""
    if isinstance(value, dict):
        return {key: _shortened(item, longest) for key, item in value.items()}
    if isinstance(value, list) and len(value) > longest:
        return f"{len(value)} values, {value[0]:.6g} to {value[-1]:.6g}" if all(
            isinstance(v, (int, float)) for v in value) else f"{len(value)} values"
    return value
