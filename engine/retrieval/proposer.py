"""The retrieval mask proposer (Polyp-Gen's hierarchical retrieval): where in a frame a polyp belongs.

For a query frame:

1. **Global retrieval.** The query's global feature (mean of its patch tokens), L2-normalised, is searched in
   the database's flat L2 index: the top-K entries are the candidates.
2. **Local matching**, per candidate: every query patch is matched to its nearest neighbour (L2) among the
   candidate's patches *inside the candidate's mask* (patches the mask covers by half or more; the most
   covered one(s) for a mask smaller than a patch). The 30 closest matches are kept.
3. **Clustering.** The kept matches' query patch centres (model-input pixels) are clustered by DBSCAN with
   eps = 2·P + 1 (P = patch size, 14) and min_samples = 1 — which is single-linkage clustering cut at eps:
   two points are in one cluster when a chain of points, each within eps of the next, joins them
   (``dbscan_min1``, equal to sklearn.cluster.DBSCAN(eps, min_samples=1)).
4. **Proposal.** The largest cluster's bounding rectangle of patch centres, widened by P/2 on every side
   (so it covers those patches exactly), is mapped to frame pixels (engine.retrieval.features.PatchGrid),
   clipped to the frame, and checked: too small (a side under ``min_side`` px), covering most of the frame
   (over ``max_fraction`` of its area) or lying mostly on the endoscope's black border (over half its pixels
   dark, when the frame is given) refuses it, with the reason.

K candidates give up to K proposals. Each is scored in [0, 1]:
``score = (1 + cos) / 2 · support``, where cos is the cosine similarity of query and candidate global features
(1 − d²/2 for unit vectors) and support is the largest cluster's share of the kept matches (a proposal on
which the matches agree scores higher than one drawn from a scattered few). Proposals whose boxes overlap
(IoU ≥ ``merge_iou``) are merged into the best-scored of them: its box and score, with the others'
candidates listed in ``merged`` (several candidates agreeing on a place). The box is kept rather than the
union taken, so merging never grows a region. The list is best first.

Differences from the public Polyp-Gen code, on purpose: it handled one candidate (here: the top-K loop with
scoring and merging); it matched against all candidate patches and dropped matches that fell outside the
mask (here: the nearest neighbour is searched among the in-mask patches, as the paper describes, so every
query patch has a match); it cropped frames to a multiple of 14 px (here: the frame is resized to a fixed
grid, see features.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.retrieval.database import RetrievalDatabase, in_mask_patches, normalise
from engine.retrieval.features import FrameFeatures, PatchGrid, check_frame

KEEP_MATCHES = 30
DEFAULT_TOP_K = 5
MIN_SIDE_PX = 8.0  # a proposal narrower or shorter than this (frame pixels) is refused
MAX_FRACTION = 0.5  # a proposal covering more than this share of the frame is refused
MERGE_IOU = 0.5
DARK_LEVEL = 30  # a pixel whose channels are all ≤ this is the endoscope's black border (as the random source)
MAX_DARK_FRACTION = 0.5  # a proposal more than half on the black border is refused


# ---------------------------------------------------------------------------------------------- clustering
def dbscan_min1(points: np.ndarray, eps: float) -> np.ndarray:
    """DBSCAN with min_samples = 1 (Euclidean): single-linkage clusters at distance eps, labelled 0, 1, …
    in order of each cluster's first point (the labels sklearn.cluster.DBSCAN gives). No point is noise."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    diff = points[:, None, :] - points[None, :, :]
    near = np.einsum("ijk,ijk->ij", diff, diff) <= eps * eps
    label = 0
    for start in range(n):
        if labels[start] >= 0:
            continue
        labels[start] = label
        frontier = [start]
        while frontier:
            point = frontier.pop()
            neighbours = np.flatnonzero(near[point] & (labels < 0))
            labels[neighbours] = label
            frontier.extend(neighbours.tolist())
        label += 1
    return labels


# ---------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Candidate:
    """A database entry the global search found for the query."""

    entry_id: int
    source: str  # the entry's source frame path
    how: str  # how its polyp-free frame was made
    rank: int  # 0 = nearest
    distance: float  # squared L2 between normalised global features (0..4)

    @property
    def similarity(self) -> float:
        """Cosine similarity of the global features."""
        return 1.0 - self.distance / 2.0

    def to_json(self) -> dict:
        return {"entry_id": self.entry_id, "source": self.source, "how": self.how, "rank": self.rank,
                "similarity": round(self.similarity, 6)}


@dataclass
class Matches:
    """The kept patch matches of one candidate, for --explain: patch indices, distances, cluster labels."""

    query_patches: np.ndarray  # (m,) query patch indices
    candidate_patches: np.ndarray  # (m,) candidate patch indices (inside its mask)
    distances: np.ndarray  # (m,) L2 distances of the local features
    labels: np.ndarray  # (m,) DBSCAN cluster of each match
    chosen: int  # label of the largest cluster
    in_mask: np.ndarray  # the candidate's in-mask patch indices


@dataclass
class Proposal:
    """A proposed region: a box in frame pixels with its score and where it came from."""

    box: tuple[float, float, float, float]  # x, y, width, height in frame pixels
    score: float
    candidate: Candidate
    frame_size: tuple[int, int]  # (width, height) of the query frame
    reason_refused: str | None = None
    merged: tuple[Candidate, ...] = ()  # other candidates whose proposals were merged into this one
    matches: Matches | None = field(default=None, repr=False)

    def mask(self, height: int, width: int) -> np.ndarray:
        """The box as a boolean mask of a height × width frame (scaled when that is not the query's size):
        pixel (x, y) is inside when its centre is."""
        sx, sy = width / self.frame_size[0], height / self.frame_size[1]
        x, y, w, h = self.box
        left, right = int(round(x * sx)), int(round((x + w) * sx))
        top, bottom = int(round(y * sy)), int(round((y + h) * sy))
        mask = np.zeros((height, width), bool)
        mask[max(top, 0):min(bottom, height), max(left, 0):min(right, width)] = True
        return mask

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.box
        return x, y, x + w, y + h

    def to_json(self) -> dict:
        return {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 6),
            "candidate": self.candidate.to_json(),
            "merged": [c.to_json() for c in self.merged],
            "reason_refused": self.reason_refused,
        }


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def clip_box(box_xyxy, width: int, height: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) clipped to the frame, returned as (x, y, w, h)."""
    x0, y0, x1, y1 = box_xyxy
    x0, x1 = float(np.clip(x0, 0, width)), float(np.clip(x1, 0, width))
    y0, y1 = float(np.clip(y0, 0, height)), float(np.clip(y1, 0, height))
    return x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)


def refusal_reason(box: tuple[float, float, float, float], width: int, height: int,
                   min_side: float = MIN_SIDE_PX, max_fraction: float = MAX_FRACTION) -> str | None:
    """Why a clipped (x, y, w, h) box cannot be a proposal, or None."""
    _, _, w, h = box
    if w <= 0 or h <= 0:
        return "empty box (outside the frame)"
    if min(w, h) < min_side:
        return f"too small: {w:.1f}×{h:.1f} px (each side must be at least {min_side:g} px)"
    fraction = (w * h) / float(width * height)
    if fraction > max_fraction:
        return f"covers {fraction:.0%} of the frame (over {max_fraction:.0%}): not a polyp-sized region"
    return None


def dark_fraction(box: tuple[float, float, float, float], dark: np.ndarray) -> float:
    """Share of a box's pixels that are black border (`dark`: bool frame-sized)."""
    x, y, w, h = box
    region = dark[int(round(y)):int(round(y + h)), int(round(x)):int(round(x + w))]
    return float(region.mean()) if region.size else 1.0


def merge_overlapping(proposals: list[Proposal], iou: float = MERGE_IOU) -> list[Proposal]:
    """Greedy, best first: each proposal absorbs the later ones whose box overlaps its box by IoU ≥ `iou`;
    it keeps its own box and score and lists the absorbed candidates in ``merged``. Sorted best first."""
    remaining = sorted(proposals, key=lambda p: (-p.score, p.candidate.rank))
    merged: list[Proposal] = []
    while remaining:
        best = remaining.pop(0)
        absorbed = [other for other in remaining if box_iou(best.box, other.box) >= iou]
        remaining = [other for other in remaining if box_iou(best.box, other.box) < iou]
        if absorbed:
            best = Proposal(
                box=best.box, score=best.score, candidate=best.candidate, frame_size=best.frame_size,
                merged=best.merged + tuple(o.candidate for o in absorbed) + tuple(c for o in absorbed for c in o.merged),
                matches=best.matches,
            )
        merged.append(best)
    return merged


# ---------------------------------------------------------------------------------------------- matching
def match_candidate(query_local: np.ndarray, candidate_local: np.ndarray, in_mask: np.ndarray,
                    grid: PatchGrid, keep: int = KEEP_MATCHES) -> Matches:
    """Nearest in-mask candidate patch for every query patch; the `keep` closest; DBSCAN on their positions."""
    query = np.asarray(query_local, dtype=np.float32)
    inside = np.asarray(candidate_local[in_mask], dtype=np.float32)
    d2 = (np.einsum("ij,ij->i", query, query)[:, None] + np.einsum("ij,ij->i", inside, inside)[None, :]
          - 2.0 * query @ inside.T)
    nearest = np.argmin(d2, axis=1)
    nearest_d2 = np.maximum(d2[np.arange(len(query)), nearest], 0.0)
    order = np.argsort(nearest_d2, kind="stable")[:keep]
    positions = grid.centres(order)
    labels = dbscan_min1(positions, eps=2 * grid.patch + 1)
    counts = np.bincount(labels)
    chosen = int(np.argmax(counts))  # ties: the cluster holding the closer match (lower label)
    return Matches(query_patches=order, candidate_patches=in_mask[nearest[order]],
                   distances=np.sqrt(nearest_d2[order]), labels=labels, chosen=chosen, in_mask=in_mask)


def proposal_from_matches(matches: Matches, grid: PatchGrid, frame_width: int, frame_height: int
                          ) -> tuple[tuple[float, float, float, float], float]:
    """(clipped box in frame pixels (x, y, w, h), support) of the largest cluster."""
    members = matches.query_patches[matches.labels == matches.chosen]
    centres = grid.centres(members)
    half = grid.patch / 2
    x0, y0 = centres.min(axis=0) - half
    x1, y1 = centres.max(axis=0) + half
    (fx0, fy0), (fx1, fy1) = grid.model_to_frame([[x0, y0], [x1, y1]], frame_width, frame_height)
    support = len(members) / len(matches.query_patches)
    return clip_box((fx0, fy0, fx1, fy1), frame_width, frame_height), float(support)


# ---------------------------------------------------------------------------------------------- proposer
class RetrievalProposer:
    """A database and a feature extractor: ``propose(frame, top_k)`` → proposals, best first.

    ``last_refusals`` holds the proposals of the last call that were refused (with ``reason_refused``)."""

    def __init__(self, database: RetrievalDatabase, extractor, min_side: float = MIN_SIDE_PX,
                 max_fraction: float = MAX_FRACTION, merge_iou: float = MERGE_IOU, keep_matches: int = KEEP_MATCHES):
        database.check_features(extractor.identity())
        self.database = database
        self.extractor = extractor
        self.grid = database.grid
        self.min_side = min_side
        self.max_fraction = max_fraction
        self.merge_iou = merge_iou
        self.keep_matches = keep_matches
        self.last_refusals: list[Proposal] = []
        self.last_candidates: list[Candidate] = []

    @classmethod
    def open(cls, db_path: str | os.PathLike[str], features_bundle: str | os.PathLike[str] | None = None,
             provider: str = "auto", threads: int | None = None, **options) -> "RetrievalProposer":
        """Open a database with its feature bundle: `features_bundle`, or (None) the bundle recorded in the
        database, found by name in the bundles folder (exported_models/). DatabaseError when they differ."""
        from engine.bundle.format import find_bundle
        from engine.retrieval.features import open_feature_extractor

        database = RetrievalDatabase.open(db_path)
        if features_bundle is None:
            name = database.features.get("name")
            if database.features.get("kind") not in ("dinov2", "judge") or not name:
                raise InputError(f"{database.root}: built with {name!r}, which is not a feature bundle: pass one")
            features_bundle = find_bundle(name)
        extractor = open_feature_extractor(features_bundle, provider=provider, threads=threads)
        return cls(database, extractor, **options)

    def describe(self) -> dict[str, Any]:
        """For provenance: the database (path, id = sha256 of its manifest, count) and the feature bundle."""
        return {
            "db_path": str(self.database.root),
            "db_id": self.database.db_id,
            "db_count": self.database.count,
            "feature_bundle_id": self.extractor.bundle_id,
            "feature_bundle": self.extractor.name,
            "top_k_default": DEFAULT_TOP_K,
        }

    def propose(self, frame: np.ndarray, top_k: int = DEFAULT_TOP_K) -> list[Proposal]:
        """Proposals for an RGB uint8 frame, best first (refused ones in ``last_refusals``)."""
        frame = check_frame(frame)
        features = self.extractor.extract(frame)
        dark = frame.max(axis=2) <= DARK_LEVEL
        return self.propose_features(features, (frame.shape[1], frame.shape[0]), top_k, dark=dark)

    def propose_features(self, features: FrameFeatures, frame_size: tuple[int, int],
                         top_k: int = DEFAULT_TOP_K, dark: np.ndarray | None = None) -> list[Proposal]:
        """The proposal algorithm on already-extracted query features; `frame_size` is (width, height);
        `dark` (bool, frame-sized), when given, refuses proposals that lie mostly on the black border."""
        width, height = int(frame_size[0]), int(frame_size[1])
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}")
        self.last_refusals = []
        self.last_candidates = []
        distances, ids = self.database.search(normalise(features.global_), top_k)
        accepted: list[Proposal] = []
        for rank, (distance, entry_id) in enumerate(zip(distances.tolist(), ids.tolist(), strict=True)):
            entry = self.database.entry(entry_id)
            candidate = Candidate(entry_id=entry_id, source=entry.get("source", ""), how=entry.get("how", ""),
                                  rank=rank, distance=float(distance))
            self.last_candidates.append(candidate)
            in_mask = in_mask_patches(self.database.coverage[entry_id])
            if in_mask.size == 0:
                self.last_refusals.append(Proposal((0.0, 0.0, 0.0, 0.0), 0.0, candidate, (width, height),
                                                   "the candidate's mask covers no patch"))
                continue
            matches = match_candidate(features.local, self.database.locals[entry_id], in_mask, self.grid,
                                      self.keep_matches)
            box, support = proposal_from_matches(matches, self.grid, width, height)
            score = float(np.clip((1.0 + candidate.similarity) / 2.0, 0.0, 1.0) * support)
            proposal = Proposal(box, score, candidate, (width, height), matches=matches)
            reason = refusal_reason(box, width, height, self.min_side, self.max_fraction)
            if reason is None and dark is not None:
                fraction = dark_fraction(box, dark)
                if fraction > MAX_DARK_FRACTION:
                    reason = f"{fraction:.0%} of it is the black border of the frame"
            if reason:
                proposal.reason_refused = reason
                self.last_refusals.append(proposal)
            else:
                accepted.append(proposal)
        return merge_overlapping(accepted, self.merge_iou)

