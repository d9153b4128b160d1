"""Hash-based frame selection: which frames a run holds out, chosen from the file stem alone.

The same stem is held out wherever its folder lives and whatever else is in it, so the trainer
(engine.training.corpus), the judge lab (engine.evaluation.segdata) and any later run agree without a split
file: a frame is held out at ``fraction`` when the first 8 bytes of sha256(stem), read little-endian and
divided by 2^64, are below ``fraction``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def hash_position(stem: str) -> float:
    """The stem's number in [0, 1): the first 8 bytes of sha256(stem), little-endian, / 2^64."""
    return int.from_bytes(hashlib.sha256(stem.encode("utf-8")).digest()[:8], "little") / 2**64


def is_held_out(stem: str, fraction: float) -> bool:
    return hash_position(stem) < fraction


def holdout(names: Sequence[str], fraction: float, by_rank: bool = False) -> tuple[list[int], list[int]]:
    """(kept, held out) indices of ``names`` (file names; their stems are hashed) by ``is_held_out``, so the
    frames ``main.py train`` holds out at a smaller fraction are held out here too.

    ``by_rank``: hold out the round(fraction·n) frames whose hash is lowest instead — for a set that is itself
    what remained after that rule took its held-out frames (``evaluate``'s test set is often exactly those), where
    the threshold would find none. At least one frame is held out and one kept when there are two or more."""
    stems = [Path(n).stem for n in names]
    if by_rank:
        order = sorted(range(len(names)), key=lambda i: (hash_position(stems[i]), stems[i]))
        held = sorted(order[:max(1, round(fraction * len(names)))]) if len(names) >= 2 else []
    else:
        held = [i for i, stem in enumerate(stems) if is_held_out(stem, fraction)]
        if len(names) >= 2 and not held:
            held = [min(range(len(names)), key=lambda i: (hash_position(stems[i]), stems[i]))]
    if len(names) >= 2 and len(held) == len(names):
        held = held[:-1]
    chosen = set(held)
    return [i for i in range(len(names)) if i not in chosen], held


def nested_subset(names: Sequence[str], fraction: float, salt: str = "subset") -> list[int]:
    """Indices (in the order of ``names``) of a fixed share of the frames, for a learning curve: the
    round(fraction·n) frames (at least one) whose salted stem hash is lowest. Stable (it depends on the stems alone,
    not on the folder or the order) and nested (the 10 % subset lies inside the 25 % one, which lies inside the
    whole). The salt keeps it independent of the held-out rule's hash, so a subset is not the frames that just
    escaped being held out."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    stems = [Path(n).stem for n in names]
    count = min(len(names), max(1, round(fraction * len(names))))
    order = sorted(range(len(names)), key=lambda i: (hash_position(f"{salt}:{stems[i]}"), stems[i]))
    return sorted(order[:count])
