"""The batch job's ``--judge`` check: a variant the judge does not agree with is rejected, and can be
regenerated with the next seed.

``JudgeGate.open(bundle, min_score, max_attempts)`` loads the judge once per job. For each variant,
``gate.check(image, mode, generated, removed)`` gives the judge's verdict on the variant's labelled region
(engine.judge.scores: add — mean probability over the generated polyps; remove — 1 − the peak
probability where the removed polyps were) and whether it passes (score ≥ min_score).

Seeds of the retries are a pure function of the variant's own seed and the attempt number
(``attempt_seed``): attempt 0 is the variant's seed, attempt k > 0 a hash of (seed, k). The outcome of a
variant never depends on where an earlier run was interrupted, so a resumed job is byte-identical.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from engine.judge.scores import DEFAULT_MIN_SCORE, RegionVerdict, judge_region

REASON = "judge"


def attempt_seed(seed: int, attempt: int) -> int:
    if attempt == 0:
        return int(seed)
    digest = hashlib.sha256(f"{int(seed)}:judge-retry:{attempt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def labelled_region(mode: str, generated, removed, height: int, width: int) -> np.ndarray:
    """What the judge looks at: the generated polyps (add) or where the removed ones were (remove)."""
    region = np.zeros((height, width), bool)
    for instance in (generated if mode == "add" else removed):
        region |= instance.raster(height, width)
    return region


@dataclass
class JudgeGate:
    judge: object  # engine.judge.model.Judge
    min_score: float = DEFAULT_MIN_SCORE
    max_attempts: int = 1

    @classmethod
    def open(cls, bundle, min_score: float = DEFAULT_MIN_SCORE, max_attempts: int = 1, provider: str = "auto",
             threads: int | None = None) -> "JudgeGate":
        from engine.judge.model import Judge

        return cls(Judge.from_bundle(bundle, provider=provider, threads=threads), float(min_score), int(max_attempts))

    def describe(self) -> dict:
        return {"bundle": self.judge.name, "bundle_id": self.judge.bundle_id, "min_score": self.min_score,
                "max_attempts": self.max_attempts}

    def check(self, image: np.ndarray, mode: str, generated, removed) -> tuple[bool, RegionVerdict]:
        height, width = image.shape[:2]
        region = labelled_region(mode, generated, removed, height, width)
        verdict = judge_region(self.judge.look(image).probability, region, mode, self.judge.threshold)
        return verdict.agrees(self.min_score), verdict


@dataclass
class JudgedResult:
    result: object  # the pipeline's result of the kept attempt (.image)
    seed: int  # the seed that made it
    accepted: bool
    verdict: RegionVerdict | None
    attempts: list[dict]

    def record(self, gate: "JudgeGate | None") -> dict:
        """Manifest keys: "seed" of the image kept, "judge" (score, verdict, attempts), and for a rejection
        status "rejected" with reason "judge"."""
        if gate is None:
            return {}
        out = {"seed": self.seed, "judge": {**self.verdict.to_json(), **gate.describe(), "attempts": self.attempts}}
        if not self.accepted:
            out.update({"status": "rejected", "reason": REASON})
        return out


def generate_judged(gate: JudgeGate | None, generate, seed: int, mode: str, generated, removed) -> JudgedResult:
    """``generate(seed)`` once without a gate; with one, until the judge agrees or max_attempts are spent (the
    last attempt's image is kept, rejected, so a curator can still look at it and accept it). ``generated``: the
    new polyps' instances, or a function of the attempt's result giving them (a transplant's place depends on
    its seed)."""
    if gate is None:
        return JudgedResult(generate(seed), seed, True, None, [])
    attempts = []
    for attempt in range(gate.max_attempts):
        attempt_seed_value = attempt_seed(seed, attempt)
        result = generate(attempt_seed_value)
        new_polyps = generated(result) if callable(generated) else generated
        accepted, verdict = gate.check(result.image, "remove" if mode == "remove" else "add", new_polyps, removed)
        attempts.append({"seed": attempt_seed_value, "score": verdict.score})
        if accepted:
            break
    return JudgedResult(result, attempt_seed_value, accepted, verdict, attempts)


def check_judge(spec) -> str | None:
    """Before a job starts: the judge bundle's id (the job records it), or None without --judge; BundleError when
    the bundle is missing, altered or not a segmenter."""
    if getattr(spec, "judge", None) is None:
        return None
    from engine.bundle import read_bundle
    from engine.errors import BundleError

    bundle = read_bundle(spec.judge)
    if bundle.kind != "segmenter":
        raise BundleError(bundle.root / "bundle.json", f"kind {bundle.kind!r} is not a judge (\"segmenter\"; make one "
                                                       "with `main.py train-judge`)")
    return bundle.bundle_id


def open_gate(spec, threads: int | None = None) -> JudgeGate | None:
    """The job's judge gate (one onnxruntime session per process that makes variants), None without --judge."""
    if getattr(spec, "judge", None) is None:
        return None
    return JudgeGate.open(spec.judge, spec.min_judge_score, spec.max_attempts, spec.provider, threads or spec.threads)


def kept_by_size(records) -> str | None:
    """One line for the job summary: per size bin of the polyp drawn (``size_drawn``, share of the frame), how many
    of the judged variants were kept. The judge keeps fewer of the largest polyps, so a checked set leans smaller
    than the sizes it was drawn from; None when no judged variant has a drawn size."""
    from engine.judge.detectability import SIZE_BINS, size_bin

    kept = [0] * len(SIZE_BINS)
    judged = [0] * len(SIZE_BINS)
    for record in records:
        if "judge" not in record or record.get("status") not in ("ok", "rejected"):
            continue
        index = size_bin(record.get("size_drawn"))
        if index is not None:
            judged[index] += 1
            kept[index] += record["status"] == "ok"
    if not any(judged):
        return None
    parts = [f"{_bin_label(low, high)} {kept[i]} of {judged[i]}" for i, (low, high) in enumerate(SIZE_BINS) if judged[i]]
    return "kept by the judge, by the polyp size drawn (share of the frame): " + ", ".join(parts)


def _bin_label(low: float, high: float) -> str:
    if low == 0.0:
        return f"< {high * 100:g} %"
    if high > 1.0:
        return f"> {low * 100:g} %"
    return f"{low * 100:g}–{high * 100:g} %"

