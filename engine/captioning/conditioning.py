"""The clinical attributes a generator is conditioned on: which, where each value comes from, and how a job draws them.

A compact model trained with ``--attributes`` (engine.models.compact_unet, ``CompactConfig.attributes``) takes,
beside its Polyp/Normal label, one index per attribute of ``MODEL_ATTRIBUTES`` (0 = not asked, i = the i-th word
of its vocabulary, the captioner's: engine.captioning.attributes). Training reads them from the captions of its
frames; a batch job asks them per variant:

- **chosen** (``CHOSEN``: colour, surface, elevation): by the user (``--attributes red,lobulated``: each word
  finds its attribute by vocabulary), or drawn per variant (``auto``) from the input's own annotated polyps'
  distribution when it holds at least ``MIN_INPUT_POLYPS`` of them, else from the Kvasir-SEG prior shipped
  beside this module (``kvasir_seg_attributes.json``, measured by tests/benchmarks/measure_attribute_prior.py);
  ``none`` asks nothing.
- **derived** (``DERIVED``: size, outline): always measured on the mask the variant paints into, with the
  captioner's own measures (``derived_attributes``): the model works on a crop around the mask and cannot know
  the polyp's share of the frame, and the mask already fixes its outline.

A draw is seeded from the variant's seed (its own stream: ``attribute_rng``), so a variant asks the same
attributes whoever makes it and in whatever order. A draw among an attribute's values follows their counts; a
polyp whose value the captioner could not tell (elevation None) counts for none of them. No torch.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.captioning import attributes as measure
from engine.captioning.scene import make_scene
from engine.errors import InputError

# The attributes a model may be conditioned on, in the order of its attribute input (and of bundle.json's
# "attributes" section): (name, the captioner's vocabulary).
MODEL_ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("colour", measure.COLOURS),
    ("surface", measure.SURFACES),
    ("size", measure.SIZES),
    ("outline", measure.OUTLINES),
    ("elevation", measure.ELEVATIONS),
)
VOCABULARY = dict(MODEL_ATTRIBUTES)
CHOSEN = ("colour", "surface", "elevation")  # asked by the user or drawn per variant
DERIVED = ("size", "outline")  # measured on the variant's mask
AUTO, NONE = "auto", "none"
# attributes_source of a manifest line
USER_SOURCE, INPUT_SOURCE, PRIOR_SOURCE, NONE_SOURCE = "user", "input", "kvasir-prior", "none"
MIN_INPUT_POLYPS = 20  # below this many annotated polyps the input's distribution says too little: the prior
KVASIR_SEG_ATTRIBUTE_PRIOR_FILE = Path(__file__).with_name("kvasir_seg_attributes.json")
ATTRIBUTE_STREAM = 0xA77  # the draw's own stream of a variant's seed (the seed alone also places random masks)


def vocabulary_text(names: Iterable[str] = CHOSEN) -> str:
    """'colour: pale, pink, red, whitish; surface: …' for messages and help."""
    return "; ".join(f"{name}: {', '.join(VOCABULARY[name])}" for name in names)


def parse_attributes(value) -> str | dict[str, str]:
    """``--attributes`` as "auto", "none" or {attribute: value} of the chosen attributes; InputError naming the
    word and listing the vocabulary for an unknown word, a derived one or two values of one attribute."""
    text = str(value).strip().lower()
    if text in (AUTO, NONE):
        return text
    words = [word.strip() for word in text.split(",") if word.strip()]
    if not words:
        raise InputError(f"attributes {value!r} is empty: give auto, none or words ({vocabulary_text()})")
    asked: dict[str, str] = {}
    for word in words:
        owners = [name for name in CHOSEN if word in VOCABULARY[name]]
        if not owners:
            derived = [name for name in DERIVED if word in VOCABULARY[name]]
            if derived:
                raise InputError(f"attributes: {word!r} is a {derived[0]}, which comes from the mask the variant "
                                 f"paints into (--sizes, --mask-source), not from --attributes; the words are "
                                 f"{vocabulary_text()}")
            raise InputError(f"attributes: unknown word {word!r}; the words are {vocabulary_text()}")
        name = owners[0]
        if name in asked and asked[name] != word:
            raise InputError(f"attributes: {asked[name]!r} and {word!r} are both a {name}; ask one value of each "
                             f"({vocabulary_text()})")
        asked[name] = word
    return {name: asked[name] for name in CHOSEN if name in asked}


def polyp_attributes(caption: Mapping) -> dict[str, str | None]:
    """The model attributes of one polyp from its caption attributes (engine.captioning.captioner): each name of
    MODEL_ATTRIBUTES → its word, or None where the captioner could not tell it."""
    return {name: (caption.get(name) if caption.get(name) in values else None) for name, values in MODEL_ATTRIBUTES}


def derived_attributes(frame: np.ndarray, mask: np.ndarray) -> dict[str, str]:
    """Size and outline of the largest polyp in ``mask`` on ``frame``, measured as the captioner measures them
    (its share of the field of view; its solidity and axis ratio); {} when the mask holds no polyp."""
    scene = make_scene(frame, mask)
    if not scene.polyps:
        return {}
    return {name: getattr(measure, name)(scene, 0)[0] for name in DERIVED}


def attribute_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), ATTRIBUTE_STREAM])


@dataclass(frozen=True)
class AttributeDistribution:
    """Counts of the chosen attributes' values over some polyps (``counts[name][value]``), and where from."""

    counts: dict[str, dict[str, int]]
    source: str  # INPUT_SOURCE or PRIOR_SOURCE
    polyps: int = 0

    @classmethod
    def of_polyps(cls, polyps: Iterable[Mapping], source: str) -> "AttributeDistribution":
        """From polyps' attribute dicts (word or None per name)."""
        counters = {name: Counter() for name in CHOSEN}
        count = 0
        for polyp in polyps:
            count += 1
            for name in CHOSEN:
                word = polyp.get(name)
                if word in VOCABULARY[name]:
                    counters[name][word] += 1
        return cls({name: {value: int(counters[name][value]) for value in VOCABULARY[name]} for name in CHOSEN},
                   source, count)

    def probabilities(self, name: str) -> np.ndarray:
        counts = np.array([self.counts.get(name, {}).get(v, 0) for v in VOCABULARY[name]], np.float64)
        total = counts.sum()
        return counts / total if total > 0 else np.full(len(counts), 1.0 / len(counts))

    def draw(self, rng: np.random.Generator) -> dict[str, str]:
        """One value per chosen attribute, each by its counts (an attribute no polyp told: uniformly)."""
        return {name: VOCABULARY[name][int(rng.choice(len(VOCABULARY[name]), p=self.probabilities(name)))]
                for name in CHOSEN}

    def to_json(self) -> dict:
        return {"source": self.source, "polyps": self.polyps, "counts": self.counts}


def load_distribution(path: Path) -> AttributeDistribution:
    """A distribution written by tests/benchmarks/measure_attribute_prior.py; InputError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        counts = {name: {value: int(data["counts"][name][value]) for value in VOCABULARY[name]} for name in CHOSEN}
        return AttributeDistribution(counts, str(data["source"]), int(data.get("polyps", 0)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a readable attribute distribution ({exc})") from None


@functools.cache
def kvasir_seg_attribute_prior() -> AttributeDistribution:
    """The chosen attributes of Kvasir-SEG's 1000 frames' polyps, as the captioner reads them."""
    return load_distribution(KVASIR_SEG_ATTRIBUTE_PRIOR_FILE)


@dataclass(frozen=True)
class AttributePlan:
    """What a job asks of an attribute-conditioned bundle: fixed words (the user's), a distribution to draw from
    per variant, or nothing; and whether the derived ones (size, outline) are asked too."""

    source: str  # USER_SOURCE, INPUT_SOURCE, PRIOR_SOURCE or NONE_SOURCE
    fixed: dict[str, str] | None = None
    distribution: AttributeDistribution | None = None
    accepted: dict[str, list[str]] | None = None  # the words the bundle was trained on (job_attributes)

    def chosen(self, seed: int) -> dict[str, str]:
        """The chosen attributes of the variant with this seed."""
        if self.fixed is not None:
            return dict(self.fixed)
        if self.distribution is not None:
            return self.distribution.draw(attribute_rng(seed))
        return {}

    @property
    def asks(self) -> bool:
        return self.source != NONE_SOURCE

    def describe(self) -> str:
        if self.fixed is not None:
            return f"attributes asked: {', '.join(self.fixed.values())} (size and outline from each mask)"
        if self.distribution is not None:
            where = ("the input's" if self.source == INPUT_SOURCE else "the Kvasir-SEG prior's")
            return (f"attributes drawn per variant from {where} {self.distribution.polyps} polyps "
                    "(size and outline from each mask)")
        return "no attributes asked"
