"""The data of a learning curve's arms: the real subset of each fraction, its validation split, and the synthetic
variants an arm adds — made only from that subset's frames.

- ``Fraction``: at a fraction f of the real training frames, the fixed, hash-chosen subset
  (engine.dataset.splits.nested_subset: stable and nested), split into the frames trained on and the real
  validation frames early stopping looks at (``holdout`` of the subset by the trainer's hash rule, by rank, or
  ``--val DIR`` for every fraction). ``draw`` k > 0 picks another subset of the same size by a salt of its own
  (``subset_salt``): independent draws of "a curator's f of the frames", so a difference between arms can be tested
  over subsets and not only over the training seeds of one subset.
- ``generate_arm``: a batch job file (any mode: add, remove, transplant, …; this module does not look at what it
  asks) run with its input set to the training folder, restricted by a split file that marks the subset's
  training frames "train" and every other frame "test", ``from_splits = ["train"]``: no frame outside the subset
  is read as a source or donor. Its output is a folder inside the evaluation folder; the job resumes itself.
- ``check_sources``: every variant's source frame (the manifest's ``source_sha256``) must be in the fraction's
  subset, else the evaluation is refused in one line naming the variant and the fraction; variants of its
  validation frames are left out.
- ``draw_mixed``: ``ratio`` × (real training frames) variants, drawn deterministically (lowest sha256 of
  their names), so every seed and every rerun sees the same ones; from one arm's pool, or from several in equal
  shares (a mixed arm, ``--mix``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.dataset import splits
from engine.errors import InputError
from engine.evaluation import segdata
from engine.fileio import atomic_write_bytes

REAL = "real"  # the arm of the real frames alone, the baseline of every difference
VAL_FRACTION = 0.2  # of a fraction's subset, held out for early stopping (a 90-frame subset keeps 18)
GENERATED_MARKER = "evaluate-job.json"  # written into a generated arm's folder once its batch job has finished


def fraction_label(fraction: float) -> str:
    """The folder name of a fraction: 0.1 → "0.1", 1.0 → "1"."""
    return f"{fraction:g}"


@dataclass
class Fraction:
    """One point of the learning curve: the subset of the real frames and its split."""

    fraction: float
    subset: segdata.SegmentationSet  # every real frame of the fraction (the frames a curator would have)
    train: segdata.SegmentationSet  # the frames trained on
    val: segdata.SegmentationSet  # the real frames that pick the weights (held out of the subset, or --val)

    @property
    def label(self) -> str:
        return fraction_label(self.fraction)


def subset_salt(draw: int) -> str:
    """The hash salt of subset draw ``draw``: 0 is the curve's one fixed subset per fraction (as it always was)."""
    if draw < 0:
        raise ValueError(f"subset draw must be 0 or more, got {draw}")
    return "subset" if draw == 0 else f"subset-draw{draw}"


def make_fraction(real: segdata.SegmentationSet, fraction: float,
                  val: segdata.SegmentationSet | None = None, draw: int = 0) -> Fraction:
    """The fraction's subset (draw ``draw``: see ``subset_salt``) and split; ``val`` (``--val DIR``) replaces the
    split held out of the subset."""
    subset = real.subset(splits.nested_subset(real.names, fraction, salt=subset_salt(draw)))
    if val is not None:
        return Fraction(fraction, subset, subset, val)
    kept, held = splits.holdout(subset.names, VAL_FRACTION, by_rank=True)
    if not kept or not held:
        raise InputError(f"fraction {fraction_label(fraction)}: {len(subset)} real frame(s) cannot be split into "
                         "training and validation frames; use a larger fraction or give --val DIR")
    return Fraction(fraction, subset, subset.subset(kept), subset.subset(held))


def split_file_path(out: Path, part: Fraction) -> Path:
    return Path(out) / "subsets" / part.label / "split.tsv"


def write_split_file(out: Path, all_names: list[str], part: Fraction) -> Path:
    """The fraction's split file (engine.dataset.discovery.read_split_file): its training frames "train", every other
    frame of the folder "test" — what an arm's batch job reads (and what a --synthetic folder can be made with)."""
    chosen = set(part.train.names)
    lines = [f"{name}\t{'train' if name in chosen else 'test'}" for name in all_names]
    return atomic_write_bytes(split_file_path(out, part), ("\n".join(lines) + "\n").encode("utf-8"))


def _job_values(job_file: Path, train_folder: Path, split_file: Path, output: Path) -> dict:
    from engine.jobs import read_job_file

    values = read_job_file(job_file)
    values.update(input=Path(train_folder), output=Path(output), split_file=Path(split_file), from_splits=["train"],
                  resume=True)
    return values


def _describe(values: dict) -> dict:
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def generate_arm(job_file: Path, train_folder: Path, split_file: Path, output: Path,
                 on_event: Callable | None = None, cancel: Callable[[], bool] | None = None) -> tuple[Path, bool]:
    """Run the arm's batch job for one fraction into ``output`` (skipped when it finished earlier with the same job
    settings); (output, ran). A folder made from another job file is refused; a cancelled job raises
    TrainingInterrupted (rerun to resume it)."""
    from engine.jobs import build_spec, run_job
    from engine.training.task import TrainingInterrupted

    values = _job_values(job_file, train_folder, split_file, output)
    record = {"job_file": str(Path(job_file).resolve()), "settings": _describe(values)}
    marker = Path(output) / GENERATED_MARKER
    if marker.is_file():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous.get("settings") == record["settings"]:
            return Path(output), False
        raise InputError(f"{output}: was generated from other job settings than {job_file}; use --fresh to start "
                         "over, or another arm name")
    spec = build_spec(values, source=str(job_file))
    summary = run_job(spec, on_event=on_event, cancel=cancel)
    if summary.status == "cancelled":
        raise TrainingInterrupted(f"generation into {output} stopped; rerun to resume it")
    record["summary"] = {"status": summary.status, "ok": summary.ok, "failed": summary.failed,
                         "planned": summary.planned, "seconds": round(summary.seconds, 1)}
    atomic_write_bytes(marker, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    return Path(output), True


def check_sources(synthetic: segdata.SegmentationSet, part: Fraction, arm: str) -> tuple[segdata.SegmentationSet, str | None]:
    """Refuse (one line) a variant whose source frame is not in the fraction's subset; leave out, with a note, those
    made from its validation frames (they would show the frames that pick the weights to the model)."""
    allowed = set(part.subset.sha256)
    for name, source in zip(synthetic.names, synthetic.source_sha256):
        if source not in allowed:
            where = f"source_sha256 {source[:12]}…" if source else "no source_sha256"
            raise InputError(f"synthetic variant {name} of arm {arm} at fraction {part.label} was not made from that "
                             f"fraction's {len(part.subset)} real frames ({where}); make the arm's synthetic set from "
                             f"that subset only (its split file: subsets/{part.label}/split.tsv)")
    validation = set(part.val.sha256) - set(part.train.sha256)
    kept = [i for i, source in enumerate(synthetic.source_sha256) if source not in validation]
    if len(kept) == len(synthetic):
        return synthetic, None
    return synthetic.subset(kept), (f"{arm} at fraction {part.label}: {len(synthetic) - len(kept)} variant(s) made from "
                                    "the validation frames were left out (they would bias the choice of weights)")


def draw_mixed(pools: Sequence[segdata.SegmentationSet], real_count: int,
               ratio: float) -> tuple[segdata.SegmentationSet, str | None]:
    """A mixed arm's variants: round(ratio × real_count) in all, shared as equally as the count allows among the
    pools (the first pools take one more when it does not divide), each pool's share its lowest by sha256 of the
    names — so a mix of copy-paste and a generated arm at ratio 2 is exactly their two ratio-1 pools together; one
    pool is a plain arm's draw. With the note of what was asked and got when a pool has fewer (None when met)."""
    asked = max(0, round(ratio * real_count))
    shares = [asked // len(pools) + (1 if i < asked % len(pools) else 0) for i in range(len(pools))]
    drawn, got = [], 0
    for pool, share in zip(pools, shares):
        wanted = min(len(pool), share)
        order = sorted(range(len(pool)), key=lambda i: hashlib.sha256(pool.names[i].encode()).hexdigest())
        drawn.append(pool.subset(sorted(order[:wanted])))
        got += wanted
    short = None if got == asked else (f"asks {asked} variants, the arm has {got}: its pool is real + {got} "
                                       "(plan more variants per frame in its job)")
    return (segdata.concatenate(drawn) if got else drawn[0]), short  # concatenate leaves out empty shares
