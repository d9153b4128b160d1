"""The batch job's checks of its variants: a variant the ``--judge`` does not agree with, or a removal whose fill is
darker than the mucosa around it (the mucosa check, engine.judge.mucosa_check), is rejected, and can be regenerated
with the next seed.

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

from engine.judge.mucosa_check import DEFAULT_ATTEMPTS as MUCOSA_ATTEMPTS
from engine.judge.mucosa_check import REASON as DARK_FILL
from engine.judge.mucosa_check import FillMeasure, MucosaCheck, default_check
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
    attempts: list[dict]  # the judge's: seed and score of each attempt
    fill: "FillMeasure | None" = None  # removals with the mucosa check: the kept fill's measure
    fill_passed: bool = True
    fill_attempts: list[dict] | None = None  # the mucosa check's: seed and darkness of each attempt
    reason: str | None = None  # why it was rejected: REASON (the judge) or the mucosa check's "dark fill"

    def record(self, gate: "JudgeGate | None", mucosa_check: "MucosaCheck | None" = None) -> dict:
        """Manifest keys: "seed" of the image kept, "judge" (score, verdict, attempts), "mucosa_check" (the kept
        fill's darkness and detail, the threshold, each attempt's darkness), and for a rejection status "rejected"
        with reason "judge" or "dark fill"."""
        out: dict = {}
        if gate is not None:
            out.update({"seed": self.seed, "judge": {**self.verdict.to_json(), **gate.describe(),
                                                     "attempts": self.attempts}})
        if self.fill_attempts is not None:
            out["seed"] = self.seed
            out["mucosa_check"] = {**(self.fill.to_json() if self.fill is not None else {"darkness": None}),
                                   **mucosa_check.describe(), "passed": self.fill_passed,
                                   "attempts": self.fill_attempts}
        if not self.accepted:
            out.update({"status": "rejected", "reason": self.reason})
        return out


def generate_judged(gate: JudgeGate | None, generate, seed: int, mode: str, generated, removed,
                    mucosa_check: "MucosaCheck | None" = None, repainted=None, max_attempts: int | None = None
                    ) -> JudgedResult:
    """``generate(seed)`` once without a check; with the judge (``gate``) and/or, for a removal, the mucosa check
    (``mucosa_check`` on the ``repainted`` region, a bool mask), until every check passes or ``max_attempts`` (else
    the gate's) are spent; then the last attempt's image is kept, rejected, so a curator can still look at it and
    accept it — with the mucosa check alone, the lightest painting (a failed fill always has a measure).
    ``generated``: the new polyps' instances, or a function of the attempt's result giving them (a transplant's place
    depends on its seed)."""
    checks_fill = mucosa_check is not None and mode == "remove" and repainted is not None
    if gate is None and not checks_fill:
        return JudgedResult(generate(seed), seed, True, None, [])
    attempts, fill_attempts = [], ([] if checks_fill else None)
    verdict, measured, fill_passed, reason = None, None, True, None
    lightest = None  # mucosa check only: (measure, result, seed) of the lightest painting so far
    limit = max_attempts if max_attempts is not None else gate.max_attempts
    for attempt in range(limit):
        attempt_seed_value = attempt_seed(seed, attempt)
        result = generate(attempt_seed_value)
        accepted, reason = True, None
        if gate is not None:
            new_polyps = generated(result) if callable(generated) else generated
            judged_ok, verdict = gate.check(result.image, "remove" if mode == "remove" else "add", new_polyps, removed)
            attempts.append({"seed": attempt_seed_value, "score": verdict.score})
            accepted, reason = judged_ok, (None if judged_ok else REASON)
        if checks_fill:
            fill_passed, measured = mucosa_check.check(result.image, repainted)
            fill_attempts.append({"seed": attempt_seed_value,
                                  "darkness": None if measured is None else round(measured.darkness, 2)})
            if not fill_passed and accepted:
                accepted, reason = False, DARK_FILL
        if accepted:
            break
        if gate is None and (lightest is None or measured.darkness > lightest[0].darkness):
            lightest = (measured, result, attempt_seed_value)
    if not accepted and gate is None:  # dark at every painting: the lightest of them goes to rejected/
        measured, result, attempt_seed_value = lightest
    return JudgedResult(result, attempt_seed_value, accepted, verdict, attempts, measured, fill_passed, fill_attempts,
                        reason)


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


def open_mucosa_check(spec) -> MucosaCheck | None:
    """The job's mucosa check: removals (mode remove) with ``mucosa_check`` on, else None."""
    return default_check() if spec.checks_removals else None


def attempts_of(spec) -> int:
    """Paintings per variant at most: the job's ``max_attempts``; a removal with the mucosa check and no attempts of
    its own (1) gets the check's DEFAULT_ATTEMPTS."""
    if spec.max_attempts == 1 and spec.checks_removals:
        return MUCOSA_ATTEMPTS
    return spec.max_attempts


def open_gate(spec, threads: int | None = None) -> JudgeGate | None:
    """The job's judge gate (one onnxruntime session per process that makes variants), None without --judge; its
    attempts are the job's (attempts_of: a checked removal's 4 when none are given), so each line records the count
    its variant was painted up to."""
    if getattr(spec, "judge", None) is None:
        return None
    return JudgeGate.open(spec.judge, spec.min_judge_score, attempts_of(spec), spec.provider, threads or spec.threads)


class KeptBySize:
    """A job summary's line, tallied one manifest record at a time (``add``, then ``line``): per size bin of the
    polyp drawn (``size_drawn``, share of the frame), how many of the judged variants were kept. The judge keeps
    fewer of the largest polyps, so a checked set leans smaller than the sizes it was drawn from."""

    def __init__(self):
        from engine.judge.detectability import SIZE_BINS, size_bin

        self.bins, self.size_bin = SIZE_BINS, size_bin  # imported once, not per record
        self.kept = [0] * len(SIZE_BINS)
        self.judged = [0] * len(SIZE_BINS)

    def add(self, record: dict) -> None:
        if "judge" not in record or record.get("status") not in ("ok", "rejected"):
            return
        index = self.size_bin(record.get("size_drawn"))
        if index is not None:
            self.judged[index] += 1
            self.kept[index] += record["status"] == "ok"

    def line(self) -> str | None:
        """None when no judged variant has a drawn size."""
        if not any(self.judged):
            return None
        parts = [f"{_bin_label(low, high)} {self.kept[i]} of {self.judged[i]}"
                 for i, (low, high) in enumerate(self.bins) if self.judged[i]]
        return "kept by the judge, by the polyp size drawn (share of the frame): " + ", ".join(parts)


class MucosaTally:
    """A job summary's line, tallied one manifest record at a time: how many removals the mucosa check passed at the
    first painting, after painting again, and how many stayed dark (rejected)."""

    def __init__(self):
        self.first = self.later = self.dark = 0

    def add(self, record: dict) -> None:
        check = record.get("mucosa_check")
        if not check or record.get("status") not in ("ok", "rejected"):
            return
        if not check.get("passed", True):
            self.dark += 1
        elif len(check.get("attempts", [])) > 1:
            self.later += 1
        else:
            self.first += 1

    def line(self) -> str | None:
        """None when no removal was checked."""
        if self.first + self.later + self.dark == 0:
            return None
        return (f"mucosa check: {self.first} removal(s) as light as their mucosa at the first painting, {self.later} "
                f"after painting again, {self.dark} still dark (in rejected/)")


def tally_lines(tallies: list, records) -> list[str | None]:
    """Each tally's line (None: nothing to say) over these records, read in one pass (a streamed manifest)."""
    for record in records:
        for tally in tallies:
            tally.add(record)
    return [tally.line() for tally in tallies]


def kept_by_size(records) -> str | None:
    """KeptBySize's line over these records."""
    return tally_lines([KeptBySize()], records)[0]


def mucosa_tally(records) -> str | None:
    """MucosaTally's line over these records."""
    return tally_lines([MucosaTally()], records)[0]


def _bin_label(low: float, high: float) -> str:
    if low == 0.0:
        return f"< {high * 100:g} %"
    if high > 1.0:
        return f"> {low * 100:g} %"
    return f"{low * 100:g}–{high * 100:g} %"

