"""Drawing polyps with rare clinical attributes more often in training (``main.py train --rare-attributes FLOOR``).

Kvasir-SEG's polyps are mostly pink, smooth and raised: whitish 4 %, irregular 7 %, flat 2 % of them (the
captioner, engine.captioning.attributes). Drawn in proportion, a 2,000-step fine-tune gives each rare value a few
hundred looks and the model never learns to paint it (docs/compact-model.md: whitish, irregular and flat read back
0 % when asked). This module gives each training polyp a draw weight so that every value of the attributes the batch
job asks (colour, surface, elevation; size and outline follow from the mask) makes up at least about FLOOR of the
Polyp pairs: a polyp's weight is its base weight (the uniform draw's: a frame, then one of its polyps) times
``min(cap, max(1, FLOOR / share))`` for the share of its rarest asked value. The cap keeps the handful of flat
polyps from being seen dozens of times more than the others. Pure numpy; the training task draws with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

BALANCED_ATTRIBUTES = ("colour", "surface", "elevation")
DEFAULT_CAP = 8.0


def value_shares(polyps: Sequence[Mapping], weights: Sequence[float],
                 names: Sequence[str] = BALANCED_ATTRIBUTES) -> dict[str, dict[str, float]]:
    """{attribute: {value: share}} of the weighted polyps, per attribute among the polyps it was measured on."""
    weights = np.asarray(weights, float)
    shares: dict[str, dict[str, float]] = {}
    for name in names:
        totals: dict[str, float] = {}
        for polyp, weight in zip(polyps, weights):
            value = polyp.get(name)
            if value is not None:
                totals[value] = totals.get(value, 0.0) + float(weight)
        whole = sum(totals.values())
        shares[name] = {value: total / whole for value, total in sorted(totals.items())} if whole > 0 else {}
    return shares


def rare_value_weights(polyps: Sequence[Mapping], base: Sequence[float], floor: float, cap: float = DEFAULT_CAP,
                       names: Sequence[str] = BALANCED_ATTRIBUTES) -> np.ndarray:
    """Each polyp's draw weight: ``base`` times the boost of its rarest asked value (``floor / share``, at least
    1, at most ``cap``), shares measured with ``base``. A polyp with no measured value keeps its base weight."""
    if not 0.0 < floor < 1.0:
        raise ValueError(f"the rare-attribute floor is a share between 0 and 1, got {floor}")
    if cap < 1.0:
        raise ValueError(f"the rare-attribute cap is at least 1, got {cap}")
    base = np.asarray(base, float)
    if len(base) != len(polyps):
        raise ValueError(f"{len(polyps)} polyps but {len(base)} base weights")
    shares = value_shares(polyps, base, names)
    boosts = np.ones(len(polyps))
    for i, polyp in enumerate(polyps):
        for name in names:
            value = polyp.get(name)
            if value is not None and shares[name].get(value, 0.0) > 0.0:
                boosts[i] = max(boosts[i], min(cap, floor / shares[name][value]))
    return base * boosts


def shares_line(before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]) -> str:
    """'colour pale 11→14 %, whitish 4→13 %, …' for the training log: each value's share before and after."""
    parts = []
    for name, values in before.items():
        moved = ", ".join(f"{value} {100 * share:.0f}→{100 * after[name].get(value, 0.0):.0f} %"
                          for value, share in values.items())
        parts.append(f"{name} {moved}")
    return "; ".join(parts)
