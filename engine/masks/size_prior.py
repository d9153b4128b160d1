"""How large new polyps are: a distribution of polyp sizes as area fractions of the frame.

A random mask's polyp takes its size from the sizes real polyps have, diminutive to large, so that a made
dataset keeps the small polyps detectors miss. The distribution is the input's own when it has enough
annotated polyps (``measure``), else the Kvasir-SEG prior shipped beside this module
(``kvasir_seg_sizes.json``, measured by tests/benchmarks/measure_size_prior.py); ``--sizes`` may narrow
either to the small or the large ones, or to a range of percent of the frame.

A distribution is kept as its quantiles (101 of them, at probabilities 0, 0.01, …, 1) and sampled by inverse
CDF with linear interpolation between them, from a seeded numpy Generator: deterministic for a seed.
One polyp's size is its 8-connected component's pixel count over the frame's (engine.masks.instances).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import InputError
from engine.masks.geometry import binarize
from engine.masks.instances import split_instances

QUANTILE_PROBABILITIES = np.linspace(0.0, 1.0, 101)
KVASIR_SEG_PRIOR_FILE = Path(__file__).with_name("kvasir_seg_sizes.json")
KVASIR_SEG_PRIOR_SOURCE = "kvasir-seg prior"
INPUT_SOURCE = "input"
# The size bins of the reports, in fractions of the frame: < 2, 2–5, 5–10, 10–20, > 20 %.
SIZE_BIN_EDGES = (0.02, 0.05, 0.10, 0.20)
SIZE_BIN_LABELS = ("<2", "2-5", "5-10", "10-20", ">20")  # percent of the frame, split at SIZE_BIN_EDGES
# --sizes small: the report's two smallest bins (below 5 % of the frame: diminutive and small polyps, about a
# quarter of Kvasir-SEG's); large: its largest (over 20 %, about a quarter too).
SMALL_BELOW = 0.05
LARGE_ABOVE = 0.20
MAX_SIZE = 0.9  # no polyp may cover more of the frame than a region may (engine.masks.sources)
# Below this many annotated polyps, an input's sizes say too little: the prior is used.
MIN_INPUT_POLYPS = 20
# Where a narrowed distribution keeps less than this of its mass, the range is drawn uniformly instead.
MIN_RANGE_MASS = 0.01
SIZES_HELP = "all, small (< 5 % of the frame), large (> 20 %) or a range of percent of the frame such as 2-10"


@dataclass(frozen=True)
class SizeDistribution:
    """Polyp sizes (area fractions of the frame) as quantiles, optionally narrowed to [low, high]."""

    quantiles: tuple[float, ...]  # at QUANTILE_PROBABILITIES, non-decreasing
    source: str  # what the manifest records as size_source: "input", "kvasir-seg prior", with any narrowing
    low: float = 0.0
    high: float = 1.0

    @classmethod
    def from_sizes(cls, sizes: Iterable[float], source: str) -> "SizeDistribution":
        values = np.asarray(list(sizes), np.float64)
        if values.size == 0:
            raise InputError(f"{source}: no polyp sizes to make a size distribution from")
        return cls(tuple(float(v) for v in np.quantile(values, QUANTILE_PROBABILITIES)), source)

    def cdf(self, fraction: float) -> float:
        """The share of polyps no larger than `fraction` of the frame."""
        quantiles = np.asarray(self.quantiles)
        if fraction < quantiles[0]:
            return 0.0
        if fraction >= quantiles[-1]:
            return 1.0
        # The last probability whose quantile is ≤ fraction, interpolated to the next: ties (flat stretches) are safe.
        index = int(np.searchsorted(quantiles, fraction, side="right")) - 1
        q0, q1 = quantiles[index], quantiles[index + 1]
        p0, p1 = QUANTILE_PROBABILITIES[index], QUANTILE_PROBABILITIES[index + 1]
        return float(p0 + (p1 - p0) * (fraction - q0) / (q1 - q0)) if q1 > q0 else float(p1)

    def sample(self, rng: np.random.Generator) -> float:
        """One size, by inverse CDF within [low, high]; uniform over that range where it holds too little mass."""
        lower, upper = self.cdf(self.low), self.cdf(self.high)
        if upper - lower < MIN_RANGE_MASS:
            return float(rng.uniform(self.low, self.high))
        probability = rng.uniform(lower, upper)
        size = float(np.interp(probability, QUANTILE_PROBABILITIES, self.quantiles))
        return min(max(size, self.low), self.high)

    def narrowed(self, low: float, high: float, label: str) -> "SizeDistribution":
        """The same distribution kept to [low, high], its source naming the narrowing (`label`)."""
        return SizeDistribution(self.quantiles, f"{self.source}, {label}", low, high)

    def to_json(self) -> dict:
        return {"source": self.source, "probabilities": [round(float(p), 2) for p in QUANTILE_PROBABILITIES],
                "quantiles": [round(q, 6) for q in self.quantiles]}


def instance_sizes(mask: np.ndarray) -> list[float]:
    """Each polyp's area as a fraction of its frame: one per 8-connected component of the (any-format) mask."""
    binary = binarize(mask)
    return [float(component.sum()) / binary.size for component in split_instances(binary)]


def measure(masks: Iterable[np.ndarray], source: str = INPUT_SOURCE) -> SizeDistribution:
    """The size distribution of the polyps in some masks (one polyp per connected component)."""
    return SizeDistribution.from_sizes((size for mask in masks for size in instance_sizes(mask)), source)


def save(distribution: SizeDistribution, path: Path, **about) -> None:
    """Write a distribution as a small JSON file; `about` (dataset, count, date, …) is kept beside it."""
    data = {**about, **distribution.to_json()}
    lines = [f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}" for key, value in data.items()]
    Path(path).write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")


def load(path: Path) -> SizeDistribution:
    """A distribution written by ``save``; InputError naming the file when it is missing or not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        quantiles, source = data["quantiles"], data["source"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a readable size distribution ({exc})") from None
    if len(quantiles) != len(QUANTILE_PROBABILITIES):
        raise InputError(f"{path}: a size distribution holds {len(QUANTILE_PROBABILITIES)} quantiles, "
                         f"not {len(quantiles)}")
    return SizeDistribution(tuple(float(q) for q in quantiles), source)


@functools.cache
def kvasir_seg_prior() -> SizeDistribution:
    """The sizes of Kvasir-SEG's 1000 frames' polyps: what new polyps take when the input has no masks."""
    return load(KVASIR_SEG_PRIOR_FILE)


def parse_sizes(value: str) -> tuple[float, float, str] | None:
    """``--sizes`` as (low, high, label) in fractions of the frame, or None for "all"; InputError otherwise."""
    text = str(value).strip().lower()
    if text == "all":
        return None
    if text == "small":
        return 0.0, SMALL_BELOW, f"small (< {SMALL_BELOW:.0%})"
    if text == "large":
        return LARGE_ABOVE, MAX_SIZE, f"large (> {LARGE_ABOVE:.0%})"
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*%?", text)
    if match:
        low, high = float(match.group(1)) / 100, float(match.group(2)) / 100
        if 0 < high <= MAX_SIZE and low < high:
            return low, high, f"{match.group(1)}-{match.group(2)} %"
    raise InputError(f"sizes {value!r} is not {SIZES_HELP} (a range: low < high, at most {MAX_SIZE:.0%})")


def job_sizes(base: SizeDistribution, sizes: str) -> SizeDistribution:
    """A job's size distribution: its base (the input's or the prior) narrowed as ``--sizes`` says."""
    narrowing = parse_sizes(sizes)
    return base if narrowing is None else base.narrowed(*narrowing)


def size_bin(fraction: float) -> str:
    """The report bin of a size: "<2", "2-5", "5-10", "10-20" or ">20" (percent of the frame)."""
    return SIZE_BIN_LABELS[int(np.searchsorted(SIZE_BIN_EDGES, fraction, side="right"))]
