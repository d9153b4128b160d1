"""The proposal algorithm with a deterministic stand-in extractor (mean colour per patch), where geometry can
be checked exactly: DBSCAN equals sklearn's, shifted copies get boxes on the shifted polyp, degenerate
proposals are refused with reasons, overlapping ones merge."""

from __future__ import annotations

import numpy as np
import pytest

from engine.masks.instances import bbox_of
from engine.retrieval.database import (
    DatabaseWriter,
    RetrievalDatabase,
    create_empty,
    in_mask_patches,
)
from engine.retrieval.features import MeanColourExtractor, PatchGrid
from engine.retrieval.proposer import (
    Candidate,
    Proposal,
    RetrievalProposer,
    box_iou,
    dbscan_min1,
    merge_overlapping,
    refusal_reason,
)
from engine.samples import generate_frame


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """A copy moved by (dx, dy) pixels; what comes in from outside is black (the endoscope border's colour)."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def make_db(path, extractor, items):
    """items: (frame, mask, source name); written with the real writer, committed once."""
    create_empty(path, extractor.identity())
    with DatabaseWriter(path, extractor.identity()) as writer:
        for frame, mask, name in items:
            features = extractor.extract(frame)
            writer.add(features.local, features.global_, mask, frame, name, f"sha-{name}", "polyp-frame")
        writer.commit()
    return RetrievalDatabase.open(path)


# ---------------------------------------------------------------------------------------------- DBSCAN
def test_dbscan_min1_equals_sklearn():
    from sklearn.cluster import DBSCAN

    rng = np.random.default_rng(0)
    grid = PatchGrid(16, 16, 14)
    eps = 2 * 14 + 1
    cases = [rng.uniform(0, 224, (n, 2)) for n in (1, 2, 5, 30, 30, 30, 80)]
    cases += [grid.centres(rng.choice(256, 30, replace=False)) for _ in range(20)]  # patch centres, as used
    cases += [np.array([[0.0, 0.0], [29.0, 0.0], [58.0, 0.0], [100.0, 100.0]])]  # exactly eps apart: linked
    cases += [np.repeat(rng.uniform(0, 224, (4, 2)), 3, axis=0)]  # duplicates
    for points in cases:
        expected = DBSCAN(eps=eps, min_samples=1).fit(points).labels_
        assert np.array_equal(dbscan_min1(points, eps), expected), points
    for seed in range(30):  # other eps, 3-D points
        points = np.random.default_rng(seed).normal(size=(40, 3)) * 10
        for e in (0.5, 3.0, 7.5):
            assert np.array_equal(dbscan_min1(points, e), DBSCAN(eps=e, min_samples=1).fit(points).labels_)
    assert dbscan_min1(np.zeros((0, 2)), eps).shape == (0,)


# ---------------------------------------------------------------------------------------------- geometry
def test_aligned_shift_gives_exactly_the_shifted_patches_box(tmp_path):
    """With a shift of whole patches, the candidate's in-mask patches reappear in the query with identical
    features (distance 0): keeping exactly those matches, the box is exactly their shifted rectangle."""
    grid = PatchGrid(16, 16, 14)
    extractor = MeanColourExtractor(grid)
    frame, masks = generate_frame(4, 320, 256, polyps=1)  # 20 × 16 frame pixels per patch
    db = make_db(tmp_path / "db", extractor, [(frame, masks[0], "f")])
    in_mask = in_mask_patches(db.coverage[0])
    dx, dy = 2 * 20, -1 * 16
    proposer = RetrievalProposer(db, extractor, keep_matches=len(in_mask))
    (proposal,) = proposer.propose(shifted(frame, dx, dy), top_k=1)
    assert np.all(proposal.matches.distances < 1e-3)
    boxes = np.array([grid.patch_box(i, 320, 256) for i in in_mask])
    expected = (boxes[:, 0].min() + dx, boxes[:, 1].min() + dy, boxes[:, 2].max() - boxes[:, 0].min(),
                boxes[:, 3].max() - boxes[:, 1].min())
    np.testing.assert_allclose(proposal.box, expected, atol=1e-9)
    assert proposal.candidate.entry_id == 0 and proposal.candidate.source == "f"


@pytest.fixture(scope="module")
def single_entry_dbs(tmp_path_factory):
    """Per seed: a 32 × 32-grid mean-colour database holding that seed's generated frame and polyp mask."""
    extractor = MeanColourExtractor(PatchGrid(32, 32, 14))
    dbs = {}
    for seed in range(6):
        frame, masks = generate_frame(seed, 320, 256, polyps=1)
        db = make_db(tmp_path_factory.mktemp(f"db{seed}") / "db", extractor, [(frame, masks[0], "source")])
        dbs[seed] = (frame, masks[0], RetrievalProposer(db, extractor))
    return dbs


def _shift_ious(dbs, shifts):
    ious = []
    for frame, mask, proposer in dbs.values():
        for dx, dy in shifts:
            query_mask = shifted(mask, dx, dy)
            if query_mask.sum() < 0.8 * mask.sum():
                continue  # shifted out of the frame
            proposals = proposer.propose(shifted(frame, dx, dy), top_k=1)
            assert len(proposals) == 1, proposer.last_refusals
            ious.append(box_iou(proposals[0].box, bbox_of(query_mask)))
    return np.array(ious)


def test_shifted_copy_gets_a_proposal_on_the_shifted_polyp(single_entry_dbs):
    """Default constants (30 matches, eps 2·14+1, widened by 7). Whole-patch shifts reproduce the candidate's
    polyp patches exactly in the query: every proposal is on the shifted polyp (IoU > 0.5 with its true box).
    The mean-colour stand-in is far less distinctive than DINOv2, hence the 32 × 32 grid (polyps of 30+
    patches), and it is not shift-invariant inside a patch: with sub-patch shifts most (not all) boxes land on
    the polyp."""
    whole = _shift_ious(single_entry_dbs, [(0, 0), (40, 32), (-30, 16), (20, -24), (-50, -40)])  # 10 × 8 px patches
    assert len(whole) >= 20 and whole.min() > 0.5, whole
    sub = _shift_ious(single_entry_dbs, [(37, -23), (13, 29), (-25, -15), (-61, 11)])
    assert len(sub) >= 16 and np.mean(sub > 0.5) >= 0.75, sub


def test_global_search_finds_the_same_frame_first(tmp_path):
    extractor = MeanColourExtractor()
    items = []
    for seed in range(6):
        frame, masks = generate_frame(seed, 320, 256, polyps=1)
        items.append((frame, masks[0], f"frame{seed}"))
    db = make_db(tmp_path / "db", extractor, items)
    for seed in (0, 3, 5):
        distances, ids = db.search(extractor.extract(items[seed][0]).global_, 3)
        assert ids[0] == seed and distances[0] < 1e-6 and len(ids) == 3
        assert np.all(np.diff(distances) >= 0)
    proposer = RetrievalProposer(db, extractor)
    proposer.propose(items[2][0], top_k=4)
    assert [c.rank for c in proposer.last_candidates] == [0, 1, 2, 3]
    assert proposer.last_candidates[0].entry_id == 2 and proposer.last_candidates[0].similarity == pytest.approx(1)


def test_degenerate_proposals_are_refused_with_reasons(tmp_path):
    extractor = MeanColourExtractor()
    frame, masks = generate_frame(7, 320, 256, polyps=1)
    everything = np.ones(masks[0].shape, bool)
    db = make_db(tmp_path / "db", extractor, [(frame, everything, "whole"), (frame, masks[0], "polyp")])
    # 1. a candidate whose mask is the whole frame, every patch kept: one cluster, the whole frame
    proposer = RetrievalProposer(db, extractor, keep_matches=256)
    proposals = proposer.propose(frame, top_k=2)
    reasons = {r.candidate.source: r.reason_refused for r in proposer.last_refusals}
    assert reasons["whole"].startswith("covers 100% of the frame"), reasons
    assert all(p.candidate.source != "whole" for p in proposals)
    # 2. a tiny query frame: one patch is 1.25 × 1 px, every box is under 8 px
    proposer = RetrievalProposer(db, extractor)
    tiny = np.ascontiguousarray(frame[::16, ::16])
    assert proposer.propose(tiny, top_k=2) == []
    assert len(proposer.last_refusals) == 2
    assert all("too small" in r.reason_refused or "of the frame" in r.reason_refused for r in proposer.last_refusals)
    # 3. a black frame: whatever matches, the box lies on black border
    assert proposer.propose(np.zeros((256, 320, 3), np.uint8), top_k=2) == []
    assert all("black border" in r.reason_refused for r in proposer.last_refusals)
    # 4. a mask far smaller than a patch covers none of it (to the 1/255 the coverage is stored at)
    big, _ = generate_frame(8, 1280, 1024, polyps=0)
    speck = np.zeros(big.shape[:2], bool)
    speck[500, 600] = True
    proposer = RetrievalProposer(make_db(tmp_path / "speck", extractor, [(big, speck, "speck")]), extractor)
    assert proposer.propose(big, top_k=1) == []
    assert proposer.last_refusals[0].reason_refused == "the candidate's mask covers no patch"
    # the rules themselves
    assert refusal_reason((10, 10, 100, 100), 320, 256) is None
    assert "too small" in refusal_reason((10, 10, 7.9, 100), 320, 256)
    assert "covers 61%" in refusal_reason((0, 0, 250, 200), 320, 256)
    assert "empty" in refusal_reason((0, 0, 0, 10), 320, 256)


def test_every_box_is_inside_the_frame(tmp_path):
    extractor = MeanColourExtractor()
    items = []
    for seed in range(8):
        frame, masks = generate_frame(100 + seed, 320, 256, polyps=1 + seed % 2)
        items.append((frame, np.any(masks, axis=0), f"f{seed}"))
    db = make_db(tmp_path / "db", extractor, items)
    proposer = RetrievalProposer(db, extractor)
    for seed in range(4):
        query, _ = generate_frame(500 + seed, 280 + 40 * seed, 240, polyps=0)
        proposals = proposer.propose(query, top_k=5)
        scores = [p.score for p in proposals]
        assert scores == sorted(scores, reverse=True)
        for proposal in proposals:
            x, y, w, h = proposal.box
            assert 0 <= x and 0 <= y and x + w <= query.shape[1] + 1e-9 and y + h <= query.shape[0] + 1e-9
            assert min(w, h) >= 8 and w * h <= 0.5 * query.shape[0] * query.shape[1]
            assert 0 <= proposal.score <= 1 and proposal.reason_refused is None
            mask = proposal.mask(*query.shape[:2])
            assert mask.any() and box_iou(bbox_of(mask), proposal.box) > 0.9
        # every candidate is accounted for: accepted, merged into one, or refused
        merged = sum(len(p.merged) for p in proposals)
        assert len(proposals) + merged + len(proposer.last_refusals) == len(proposer.last_candidates) == 5


# ---------------------------------------------------------------------------------------------- helpers
def _proposal(box, score, entry_id):
    return Proposal(box=box, score=score, candidate=Candidate(entry_id, f"f{entry_id}", "supplied", entry_id, 0.1),
                    frame_size=(320, 256))


def test_merge_keeps_the_best_box_and_lists_the_others():
    a = _proposal((10, 10, 100, 100), 0.5, 0)
    b = _proposal((15, 12, 100, 100), 0.9, 1)  # overlaps a (IoU ≈ 0.83)
    c = _proposal((200, 150, 50, 50), 0.7, 2)  # separate
    merged = merge_overlapping([a, b, c])
    assert [p.candidate.entry_id for p in merged] == [1, 2]
    assert merged[0].box == b.box and merged[0].score == 0.9
    assert [m.entry_id for m in merged[0].merged] == [0]
    assert merged[1].merged == ()
    assert merge_overlapping([]) == []


def test_proposal_mask_scales_and_rounds():
    p = _proposal((10.4, 20.6, 30.0, 40.0), 0.5, 0)
    mask = p.mask(256, 320)
    assert mask.shape == (256, 320)
    assert bbox_of(mask) == (10.0, 21.0, 30.0, 40.0)
    double = p.mask(512, 640)
    assert bbox_of(double) == (21.0, 41.0, 60.0, 80.0)
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(1 / 3)
