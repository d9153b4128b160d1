"""A database built from ../shared/data's Kvasir-SEG frames, and a proposal for each of its normal frames.

The feature bundle is the shipped demo one (random weights): what is retrieved means nothing, but every
proposal must be a valid box inside its frame, and the explain pictures must draw."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_data_or_skip

from engine.dataset.image_reader import read_frame
from engine.masks.instances import bbox_of
from engine.retrieval.build import build_database, discover_sources
from engine.retrieval.explain import render_explain
from engine.retrieval.features import FeatureExtractor
from engine.retrieval.proposer import (
    MAX_FRACTION,
    MIN_SIDE_PX,
    RetrievalProposer,
    box_iou,
)


@pytest.fixture(scope="module")
def real_proposer(tmp_path_factory):
    data = shared_data_or_skip()
    sources, _ = discover_sources(data / "polyps", None, "polyp")
    extractor = FeatureExtractor.from_bundle("demo-dinov2", provider="cpu")
    db_path = tmp_path_factory.mktemp("real") / "db"
    report = build_database(db_path, sources, extractor, log=lambda _: None)
    assert report.added == len(sources) == 60 and not report.skipped
    return RetrievalProposer.open(db_path, provider="cpu")


def test_every_normal_frame_gets_valid_boxes(real_proposer, tmp_path):
    normals = sorted((shared_data_or_skip() / "normal").glob("*.jpg"))
    assert len(normals) == 24
    assert real_proposer.database.verify()[0] == []
    proposed = 0
    for path in normals:
        frame = read_frame(path)
        height, width = frame.shape[:2]
        proposals = real_proposer.propose(frame, top_k=5)
        refusals = real_proposer.last_refusals
        assert len(proposals) + sum(len(p.merged) for p in proposals) + len(refusals) == 5
        for proposal in proposals:
            x, y, w, h = proposal.box
            assert 0 <= x < x + w <= width and 0 <= y < y + h <= height, (path.name, proposal.box)
            assert min(w, h) >= MIN_SIDE_PX and w * h <= MAX_FRACTION * width * height
            assert 0 <= proposal.score <= 1
            mask = proposal.mask(height, width)
            assert box_iou(bbox_of(mask), proposal.box) > 0.95
            assert 0 <= proposal.candidate.entry_id < 60
        for refusal in refusals:
            assert refusal.reason_refused
        proposed += bool(proposals)
        if path.name.startswith(("bowel_10_", "bowel_2_score_0-0_00000052")):
            picture = render_explain(frame, proposals, refusals, real_proposer.database, path.name)
            assert picture.dtype == np.uint8 and picture.shape[0] >= 400
    assert proposed >= 20  # random features, but boxes of polyp size are the rule
