"""The judge a model recommends for its own synthetic data, and the job that asks for it.

A model bundle may name, in its bundle.json, the quality gate its synthetic data was validated with::

    "judge": {"bundle": "polyp-judge", "max_attempts": 4, "modes": ["add"],
              "evidence": "docs/evaluation.md: ..."}

``bundle``: a "segmenter" bundle (name in the bundles folders, or a folder); ``max_attempts``: generations per
variant before it is written as rejected; ``modes``: the job modes the recommendation covers. The default model
names the polyp judge for mode add: on the Kvasir-SEG learning curve its judge-kept variants taught a segmenter
what its unchecked ones did not (docs/evaluation.md).

``with_model_gate(spec)``: a job that asks for the model's gate (``model_judge``: the default of ``main.py --batch``
and the app; the engine's own JobSpec default is off) and names no judge of its own gets the recommended one; the
job records the judge it used like any ``--judge``. A job with its own judge, a mode the recommendation does not
cover, or a model that recommends none is returned unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.errors import BundleError

GATE_KEY = "judge"  # the bundle.json key of a model's recommended judge


@dataclasses.dataclass(frozen=True)
class ModelGate:
    bundle: str  # a segmenter bundle's name or folder
    max_attempts: int
    modes: tuple[str, ...]
    evidence: str = ""


def recommended_gate(manifest: dict, manifest_path: Path) -> ModelGate | None:
    """The model's recommended judge from its bundle.json, None when it names none; BundleError when malformed."""
    entry = manifest.get(GATE_KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise BundleError(manifest_path, f"'{GATE_KEY}' must be an object naming a judge bundle, got {entry!r}")
    bundle, attempts, modes = entry.get("bundle"), entry.get("max_attempts", 1), entry.get("modes", ["add"])
    if not isinstance(bundle, str) or not bundle.strip():
        raise BundleError(manifest_path, f"'{GATE_KEY}.bundle' must name a segmenter bundle, got {bundle!r}")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise BundleError(manifest_path, f"'{GATE_KEY}.max_attempts' must be an integer ≥ 1, got {attempts!r}")
    if not isinstance(modes, list) or not modes or not all(isinstance(mode, str) for mode in modes):
        raise BundleError(manifest_path, f"'{GATE_KEY}.modes' must list job modes, got {modes!r}")
    return ModelGate(bundle.strip(), attempts, tuple(modes), str(entry.get("evidence", "")))


def model_gate_of(model) -> ModelGate | None:
    """The recommended judge of the model bundle at ``model`` (a name or folder)."""
    from engine.bundle.format import MANIFEST_NAME, find_bundle, read_bundle

    bundle = read_bundle(find_bundle(model), verify_hashes=False)  # the job verifies the model when it opens it
    return recommended_gate(bundle.manifest, bundle.root / MANIFEST_NAME)


def with_model_gate(spec):
    """``spec`` with the model's recommended judge when the job asks for it (``model_judge``) and names none;
    BundleError when the model is unreadable or recommends a judge that is not installed."""
    if not getattr(spec, "model_judge", False) or spec.judge is not None:
        return spec
    gate = model_gate_of(spec.model)
    if gate is None or spec.mode not in gate.modes:
        if spec.max_attempts > 1 and not spec.checks_removals:  # a removal's attempts may be the mucosa check's
            from engine.errors import InputError

            raise InputError(f"max_attempts {spec.max_attempts} regenerates variants a judge rejects, but the model "
                             f"{Path(spec.model).name} recommends no judge for mode {spec.mode}: give --judge BUNDLE")
        return spec
    from engine.bundle.format import find_bundle

    try:
        judge = find_bundle(gate.bundle)
    except BundleError as exc:
        raise BundleError(Path(spec.model), f"recommends the judge {gate.bundle!r}, which is not here ({exc}); "
                                            "install it, name another with --judge, or run without one "
                                            "(--no-judge)") from None
    return dataclasses.replace(spec, judge=Path(judge), max_attempts=max(spec.max_attempts, gate.max_attempts))
