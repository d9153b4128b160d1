#!/usr/bin/env python3
"""Do the retrieval proposer's proposals on real normal frames land on plausible mucosa? One feature model
against another, same database frames, same queries.

    python tests/benchmarks/retrieval_plausibility.py --data ../shared/data --out /tmp/plaus \
        --features demo-dinov2 --features polyp-judge [--frames 200] [--remove-polyps]

For each feature bundle: a database from the first --frames Kvasir-SEG frames (sorted by name) that the compact
model's training did not hold out (with --remove-polyps: made polyp-free by the default model first, as
Polyp-Gen does), then the top-5 proposals for each of the 24 Nerthus normal frames. A proposal is **plausible**
when its box lies on mucosa:
- ≥ 95 % of its pixels inside the visible area (engine.training.pairs.visible_area: not the black border, not
  the ScopeGuide overlay),
- < 10 % of its pixels over-exposed (all channels ≥ 235: specular glare),
- not the dark lumen: its median brightness (max channel) ≥ 0.45 × the visible area's median.
Prints, per feature model: proposals, share plausible, frames with ≥ 1 plausible proposal, and each criterion's
failures; writes results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GLARE_LEVEL, GLARE_SHARE = 235, 0.10
INSIDE_SHARE = 0.95
LUMEN_RATIO = 0.45


def plausibility(frame: np.ndarray, mask: np.ndarray, visible: np.ndarray) -> dict:
    area = max(1, int(mask.sum()))
    inside = float((mask & visible).sum()) / area
    glare = float((frame[mask].min(axis=1) >= GLARE_LEVEL).sum()) / area
    brightness = frame.max(axis=2)
    ratio = float(np.median(brightness[mask])) / max(1.0, float(np.median(brightness[visible])))
    checks = {"inside": inside >= INSIDE_SHARE, "not_glare": glare < GLARE_SHARE, "not_lumen": ratio >= LUMEN_RATIO}
    return {"inside": round(inside, 4), "glare": round(glare, 4), "brightness_ratio": round(ratio, 4),
            **checks, "plausible": all(checks.values())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--features", action="append", required=True, help="feature bundle (repeatable)")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--remove-polyps", action="store_true")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)

    from engine.bundle.format import find_bundle
    from engine.dataset.image_reader import read_frame
    from engine.retrieval.build import EntrySource, build_database
    from engine.retrieval.features import open_feature_extractor
    from engine.retrieval.proposer import RetrievalProposer
    from engine.dataset.splits import is_held_out
    from engine.training.pairs import visible_area

    kvasir = args.data / "kvasir-seg"
    images = sorted((kvasir / "images").glob("*.jpg"))
    chosen = [p for p in images if not is_held_out(p.stem, 0.05)][:args.frames]
    sources = [EntrySource(p, kvasir / "masks" / p.name, "polyp") for p in chosen]
    normals = sorted((args.data / "normal").glob("*.jpg"))
    args.out.mkdir(parents=True, exist_ok=True)
    remover = None
    if args.remove_polyps:
        from engine.retrieval.build import PolypRemover

        from engine.jobs.spec import DEFAULT_MODEL

        remover = PolypRemover(DEFAULT_MODEL, provider="cpu", threads=1)
    results = {}
    for features in args.features:
        started = time.perf_counter()
        extractor = open_feature_extractor(find_bundle(features), provider="cpu")
        db = args.out / f"db-{Path(features).name}"
        build_database(db, sources, extractor, remover=remover, overwrite=True, log=lambda _: None)
        proposer = RetrievalProposer.open(db, features_bundle=find_bundle(features), provider="cpu")
        rows = []
        for path in normals:
            frame = read_frame(path)
            visible = visible_area(frame)
            for rank, proposal in enumerate(proposer.propose(frame, top_k=args.top_k)):
                mask = proposal.mask(*frame.shape[:2])
                rows.append({"frame": path.name, "rank": rank, "box": [round(v, 1) for v in proposal.box],
                             "score": round(proposal.score, 4), **plausibility(frame, mask, visible)})
        frames_with = {r["frame"] for r in rows if r["plausible"]}
        summary = {"proposals": len(rows), "plausible": sum(r["plausible"] for r in rows),
                   "share_plausible": round(sum(r["plausible"] for r in rows) / max(1, len(rows)), 4),
                   "frames_with_a_plausible_proposal": len(frames_with), "frames": len(normals),
                   "top1_plausible": sum(r["plausible"] for r in rows if r["rank"] == 0),
                   "fail_inside": sum(not r["inside"] for r in rows),
                   "fail_glare": sum(not r["not_glare"] for r in rows),
                   "fail_lumen": sum(not r["not_lumen"] for r in rows),
                   "kind": extractor.kind, "bundle_id": extractor.bundle_id,
                   "seconds": round(time.perf_counter() - started, 1)}
        results[features] = {"summary": summary, "rows": rows}
        print(f"{features:28s} {summary['plausible']}/{summary['proposals']} plausible "
              f"({100 * summary['share_plausible']:.1f} %), top-1 {summary['top1_plausible']}/{len(normals)}, "
              f"frames with one {len(frames_with)}/{len(normals)}; fails: inside {summary['fail_inside']}, "
              f"glare {summary['fail_glare']}, lumen {summary['fail_lumen']} ({summary['seconds']} s)")
    (args.out / "results.json").write_text(json.dumps({"settings": {"frames": len(sources), "remove_polyps":
                                                                    args.remove_polyps, "top_k": args.top_k},
                                                       "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
