"""Hash-based frame selection: held-out frames and the nested learning-curve subsets."""

from __future__ import annotations

import random

import pytest

from engine.dataset.splits import hash_position, holdout, is_held_out, nested_subset

NAMES = [f"frame_{i:04d}.jpg" for i in range(400)]


def test_subsets_are_nested_sized_and_independent_of_order():
    small, medium, whole = (set(nested_subset(NAMES, f)) for f in (0.1, 0.25, 1.0))
    assert len(small) == 40 and len(medium) == 100 and len(whole) == 400
    assert small < medium < whole
    shuffled = NAMES[:]
    random.Random(0).shuffle(shuffled)
    again = {shuffled[i] for i in nested_subset(shuffled, 0.1)}
    assert again == {NAMES[i] for i in small}


def test_subset_does_not_follow_the_held_out_hash():
    """The 10 % subset is not the frames ranked just above the held-out threshold."""
    kept = [n for n in NAMES if not is_held_out(n[:-4], 0.1)]
    subset = [kept[i] for i in nested_subset(kept, 0.1)]
    lowest = sorted(kept, key=lambda n: hash_position(n[:-4]))[:len(subset)]
    assert len(set(subset) & set(lowest)) < len(subset) // 2


def test_a_subset_keeps_at_least_one_frame_and_refuses_a_bad_fraction():
    assert len(nested_subset(NAMES[:3], 0.01)) == 1
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            nested_subset(NAMES, bad)


def test_holdout_by_threshold_matches_is_held_out():
    kept, held = holdout(NAMES, 0.1)
    assert {NAMES[i] for i in held} == {n for n in NAMES if is_held_out(n[:-4], 0.1)}
    assert sorted(kept + held) == list(range(len(NAMES)))
