"""Test frames the generator has seen: which of a test set's frames the model that painted an arm's synthetic frames
was trained on, and the arm's gain on the others.

On a public test set (Kvasir-SEG's own split) the shipped model may have trained on some test frames: a generated arm
can score well there because the model paints back polyps it has seen, which the real and copy-paste arms never saw.
The leak check (engine.evaluation.leaks) refuses a test frame among the curve's own training data; this is the same
question one level down, asked of the generator, and answered in the report rather than refused (a curator cannot
retrain the shipped model): ``seen_test_frames`` reads the models of an arm's pool (its manifest lines that a model
painted: a copy-paste has none) and their training lists (engine.bundle.training_frames), and ``unseen_difference``
gives the arm's paired difference to real on the test frames none of them trained on.

Unknown (None) when a pool's folder is gone (the results were copied without the generated frames), or a model that
painted it is not found with the same bundle id, or carries no training list: the report then says nothing of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import PolypForgeError


@dataclass(frozen=True)
class SeenFrames:
    names: frozenset[str]  # test frame names the generators trained on
    bundles: tuple[str, ...]  # the generator bundles (name and short id) whose lists were read

    def to_json(self, test_frames: int) -> dict:
        return {"seen": len(self.names), "unseen": test_frames - len(self.names), "generators": list(self.bundles)}


def painting_bundles(folder: Path) -> set[tuple[str, str]] | None:
    """(bundle name, bundle id) of the ok variants a model painted in a PolypForge output (steps > 0: a copy-paste
    or Poisson transplant painted nothing), with the job's model path first to find them; None without a manifest."""
    from engine.dataset.manifest import Manifest

    manifest = Manifest(folder)
    if not manifest.path.is_file():
        return None
    found = set()
    for record in manifest.records():  # a line cut by a kill is left out, as the rebuild leaves it out
        if record.get("status") == "ok" and (record.get("steps") or 0) > 0 and record.get("bundle_id"):
            found.add((str(record.get("bundle")), str(record["bundle_id"])))
    return found


def _job_model(folder: Path) -> str | None:
    try:
        return json.loads((Path(folder) / "job.json").read_text(encoding="utf-8"))["settings"]["model"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _training_sha256(name: str, bundle_id: str, model_path: str | None) -> frozenset[str] | None:
    from engine.bundle.format import find_bundle, read_bundle
    from engine.bundle.training_frames import training_frames_of

    for candidate in (model_path, name):
        if not candidate:
            continue
        try:
            bundle = read_bundle(find_bundle(candidate), verify_hashes=False)
        except PolypForgeError:
            continue
        if bundle.bundle_id != bundle_id:
            continue
        try:
            frames = training_frames_of(bundle)
        except PolypForgeError:
            return None
        return None if frames is None else frames.sha256
    return None


def seen_test_frames(folders: list[Path], test_names: list[str], test_sha256: list[str]) -> SeenFrames | None:
    """The test frames any model that painted these pools trained on; an empty set when no model painted them;
    None when it cannot be told (see the module docstring)."""
    names: set[str] = set()
    bundles: list[str] = []
    for folder in folders:
        painted = painting_bundles(folder)
        if painted is None:
            return None
        model_path = _job_model(folder)
        for name, bundle_id in sorted(painted):
            trained = _training_sha256(name, bundle_id, model_path)
            if trained is None:
                return None
            names.update(n for n, sha in zip(test_names, test_sha256) if sha in trained)
            label = f"{name} ({bundle_id[:12]})"
            if label not in bundles:
                bundles.append(label)
    return SeenFrames(frozenset(names), tuple(bundles))


def on_frames(runs: dict[int, dict], keep) -> dict[int, dict]:
    """Each seed's test record restricted to the frames ``keep`` accepts (Dice and IoU summarised over them; the box
    metrics, which are not per frame, left out)."""
    restricted = {}
    for seed, record in runs.items():
        rows = [row for row in record["frames"] if keep(row["frame"])]
        summary = {"dice": float(np.mean([r["dice"] for r in rows])) if rows else None,
                   "iou": float(np.mean([r["iou"] for r in rows])) if rows else None, "ap50": None, "ap": None}
        restricted[seed] = {"summary": summary, "frames": rows}
    return restricted


def unseen_difference(base: dict[int, dict], other: dict[int, dict], seen: frozenset[str],
                      arms: tuple[str, str]) -> dict | None:
    """``arms[1]`` − ``arms[0]`` paired per seed (engine.evaluation.evaluation_report.paired) on the test frames not in
    ``seen``; ``base``/``other``: seed → that run's record of one test set ({"summary", "frames"}). None without
    paired seeds or unseen frames."""
    from engine.evaluation.evaluation_report import paired

    seeds = sorted(set(base) & set(other))
    if not seeds:
        return None

    def unseen(name: str) -> bool:
        return name not in seen

    if not any(unseen(row["frame"]) for row in base[seeds[0]]["frames"]):
        return None
    return paired({arms[0]: on_frames({s: base[s] for s in seeds}, unseen),
                   arms[1]: on_frames({s: other[s] for s in seeds}, unseen)}, arms)
