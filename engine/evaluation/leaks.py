"""The leak check of ``evaluate``: nothing the models train on may be a test frame.

Compared by content (sha256 of the file bytes), not by name: a real training frame that is also a test frame,
and a synthetic variant whose source frame (``source_sha256`` in its manifest record) is a test frame, are
each refused with one line naming the first offender. A synthetic variant is its source frame outside the
region, so training on it shows the test frame's background to the model.
"""

from __future__ import annotations

from engine.errors import InputError


class LeakError(InputError):
    """A test frame is also among the training data."""


def check_no_leak(train, synthetic, test) -> None:
    """Raise LeakError when a real training frame, or a synthetic variant's source, is a test frame."""
    test_by_sha = {sha: name for sha, name in zip(test.sha256, test.names)}
    shared = [(name, sha) for name, sha in zip(train.names, train.sha256) if sha in test_by_sha]
    if shared:
        name, sha = shared[0]
        raise LeakError(f"{len(shared)} real training frame(s) are also test frames (same bytes), e.g. {name} = test "
                        f"{test_by_sha[sha]} (sha256 {sha[:12]}…): split them apart first")
    if synthetic is None:
        return
    leaked = [(name, source) for name, source in zip(synthetic.names, synthetic.source_sha256) if source in test_by_sha]
    if leaked:
        name, source = leaked[0]
        raise LeakError(f"{len(leaked)} synthetic variant(s) were made from test frames, e.g. {name} from test frame "
                        f"{test_by_sha[source]} (source_sha256 {source[:12]}…): regenerate the synthetic set from "
                        "training frames only")
    own = [(name, sha) for name, sha in zip(synthetic.names, synthetic.sha256) if sha in test_by_sha]
    if own:
        raise LeakError(f"{len(own)} synthetic image(s) are byte-identical to test frames, e.g. {own[0][0]}")
