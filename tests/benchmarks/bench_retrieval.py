#!/usr/bin/env python3
"""Retrieval proposer benchmark: database build throughput per stage, and query latency at 50,000 entries.

    python tests/benchmarks/bench_retrieval.py                       # both parts (≈ 2–4 min, ≈ 20 GB of temp disk)
    python tests/benchmarks/bench_retrieval.py --part build [--vitb] [--remove-polyps]
    python tests/benchmarks/bench_retrieval.py --part query --entries 50000 --dim 768

Build: real frames (../shared/data/polyps when present, else generated sample frames) through the real build
path (read → [remove polyps] → features → write → commit) with the demo feature bundle; ``--vitb`` also
exports a random-weight DINOv2 ViT-B/14-shaped model (hidden 768, 12 layers; needs torch) and times its
features, which is what a real database build costs on this CPU.

Query: a database of ``--entries`` entries written directly in the on-disk format from synthetic features
(random unit globals, random float16 locals, random elliptic masks on the patch grid; ViT-B's dim 768 and a
16×16 grid by default: 19.7 GB of locals), opened the way `propose` opens it. Timed: the FAISS global search
(targets < 50 ms), and the full proposal with K = 5 (search + reading 5 candidates' locals from the memory map +
matching + DBSCAN + boxes; excluding the query's feature extraction; target < 1 s), with the locals file in
the page cache (warm) and evicted from it (cold, posix_fadvise DONTNEED).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
SHARED_POLYPS = REPO_ROOT.parent / "shared" / "data" / "polyps"


def _ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return f"median {statistics.median(values) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms"


# ---------------------------------------------------------------------------------------------- build
def bench_build(work: Path, vitb: bool, remove_polyps: bool, steps: int) -> None:
    from engine.retrieval.build import PolypRemover, build_database, discover_sources
    from engine.retrieval.features import FeatureExtractor

    if SHARED_POLYPS.is_dir():
        folder, what = SHARED_POLYPS, "Kvasir-SEG frames from ../shared/data/polyps"
    else:
        from engine.samples import generate_sample_set

        folder, what = work / "samples", "generated 320×256 sample frames"
        generate_sample_set(folder, count=60, seed=0, with_polyps_every=1)
    sources, _ = discover_sources(folder, None, "polyp")
    print(f"\n== database build: {len(sources)} {what}")
    extractors = [("demo-dinov2 (hidden 32, 2 layers; random)", FeatureExtractor.from_bundle("demo-dinov2", provider="cpu"))]
    if vitb:
        from engine.export.dinov2_export import (
            build_random_dinov2,
            export_dinov2_bundle,
        )

        started = time.perf_counter()
        source = build_random_dinov2(work / "vitb-src", seed=0, hidden_size=768, num_hidden_layers=12,
                                     num_attention_heads=12, image_size=518)
        export_dinov2_bundle(source, work / "vitb", grid=(16, 16), log=lambda _: None)
        print(f"(exported a random ViT-B/14-shaped DINOv2 in {time.perf_counter() - started:.0f} s)")
        extractors.append(("ViT-B/14-shaped (hidden 768, 12 layers; random)",
                           FeatureExtractor.from_bundle(work / "vitb", provider="cpu")))
    remover = PolypRemover(REPO_ROOT / "exported_models" / "demo-sd-inpaint", provider="cpu", steps=steps) \
        if remove_polyps else None
    for label, extractor in extractors:
        target = work / f"db-{extractor.dim}"
        report = build_database(target, sources, extractor, remover, overwrite=True, log=lambda _: None)
        n = report.added
        print(f"features {label}: {n} entries in {report.seconds:.2f} s = {n / report.seconds:.1f} frames/s overall")
        for stage, seconds in report.stage_seconds.items():
            if seconds > 0:
                print(f"  {stage:9s} {seconds:7.2f} s  {n / seconds:8.1f} frames/s  {seconds / n * 1000:7.1f} ms/frame")
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        print(f"  database on disk: {size / 1e6:.1f} MB ({size / n / 1e3:.0f} kB per entry)")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


# ---------------------------------------------------------------------------------------------- query
class _Identity:
    """Stands for the feature extractor whose features the synthetic database holds."""

    def __init__(self, dim: int, grid):
        self.dim, self.grid = dim, grid

    def identity(self) -> dict:
        return {"bundle_id": "synthetic", "name": "synthetic", "kind": "synthetic",
                "grid": [self.grid.rows, self.grid.cols], "patch_size": self.grid.patch, "dim": self.dim}


def write_synthetic_database(root: Path, entries: int, dim: int, rows: int, cols: int, seed: int = 0) -> float:
    """The on-disk format filled with synthetic features, written in blocks; returns seconds."""
    import faiss

    from engine.fileio import atomic_write_bytes
    from engine.retrieval.database import (
        COVERAGE,
        ENTRIES,
        GLOBALS,
        INDEX,
        LOCALS,
        MANIFEST,
        create_empty,
        normalise,
    )
    from engine.retrieval.features import PatchGrid

    started = time.perf_counter()
    grid = PatchGrid(rows, cols, 14)
    create_empty(root, _Identity(dim, grid).identity())
    rng = np.random.default_rng(seed)
    block = 500
    base = rng.standard_normal((block, grid.count, dim), dtype=np.float32).astype(np.float16)
    yy, xx = np.mgrid[0:rows, 0:cols]
    globals_ = normalise(rng.standard_normal((entries, dim), dtype=np.float32))
    with open(root / LOCALS, "wb") as locals_file, open(root / COVERAGE, "wb") as coverage_file, \
            open(root / ENTRIES, "w", encoding="utf-8") as entries_file:
        for start in range(0, entries, block):
            n = min(block, entries - start)
            # a cheap per-block change so that blocks differ (content does not change the timing)
            shift = np.float16(rng.standard_normal())
            locals_file.write((base[:n] + shift).tobytes())
            cy, cx = rng.uniform(2, rows - 2, n), rng.uniform(2, cols - 2, n)
            ry, rx = rng.uniform(1, 4, n), rng.uniform(1, 4, n)
            inside = (((yy[None] - cy[:, None, None]) / ry[:, None, None]) ** 2
                      + ((xx[None] - cx[:, None, None]) / rx[:, None, None]) ** 2) <= 1
            coverage_file.write((inside.reshape(n, -1) * 255).astype(np.uint8).tobytes())
            for i in range(start, start + n):
                entries_file.write(json.dumps({"id": i, "source": f"synthetic/{i:07d}.jpg", "sha256": f"{i:064x}",
                                               "how": "supplied", "mask": f"masks/{i:07d}.png"}) + "\n")
    np.save(root / GLOBALS, globals_)
    index = faiss.IndexFlatL2(dim)
    index.add(globals_)
    faiss.write_index(index, str(root / INDEX))
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["count"] = entries
    atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return time.perf_counter() - started


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bench_query(work: Path, entries: int, dim: int, grid: int, queries: int) -> None:
    from engine.retrieval.database import LOCALS, RetrievalDatabase
    from engine.retrieval.features import FrameFeatures
    from engine.retrieval.proposer import RetrievalProposer

    root = work / "db50k"
    gb = entries * grid * grid * dim * 2 / 1e9
    print(f"\n== query latency: {entries:,} entries, dim {dim}, {grid}×{grid} grid ({gb:.1f} GB of float16 locals)")
    free = shutil.disk_usage(work).free / 1e9
    if free < gb * 1.1 + 1:
        raise SystemExit(f"not enough disk in {work}: {free:.0f} GB free, {gb:.0f} GB needed (use --dim or --entries)")
    seconds = write_synthetic_database(root, entries, dim, grid, grid)
    print(f"wrote the synthetic database in {seconds:.0f} s")

    started = time.perf_counter()
    database = RetrievalDatabase.open(root)
    _ = database.index
    print(f"open + load the FAISS index ({database.index.ntotal:,} × {dim} float32): {time.perf_counter() - started:.2f} s")
    proposer = RetrievalProposer(database, _Identity(dim, database.grid))
    rng = np.random.default_rng(1)
    feature_sets = [FrameFeatures(local=(l := rng.standard_normal((grid * grid, dim), dtype=np.float32)),
                                  global_=l.mean(axis=0)) for _ in range(queries)]

    search = []
    for features in feature_sets:
        t = time.perf_counter()
        database.search(features.global_, 5)
        search.append(time.perf_counter() - t)
    print(f"global search (FAISS IndexFlatL2, top-5):  {_ms(search)}   target < 50 ms")

    for label, cold in (("warm (locals in the page cache)", False), ("cold (locals evicted from the page cache)", True)):
        times = []
        for features in feature_sets:
            if cold:
                _evict(root / LOCALS)
            t = time.perf_counter()
            proposals = proposer.propose_features(features, (720, 576), top_k=5)
            times.append(time.perf_counter() - t)
        print(f"full proposal, K = 5, {label}: {_ms(times)}   target < 1 s  "
              f"(last: {len(proposals)} proposals, {len(proposer.last_refusals)} refused)")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("build", "query", "all"), default="all")
    parser.add_argument("--vitb", action="store_true", help="also time a ViT-B/14-shaped feature model (needs torch)")
    parser.add_argument("--remove-polyps", action="store_true", help="time the remove stage (demo inpainting bundle)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps for --remove-polyps")
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp folder, removed)")
    args = parser.parse_args()
    os.environ.setdefault("POLYPFORGE_CACHE_DIR", str(Path(tempfile.gettempdir()) / "polypforge-bench-cache"))
    work = Path(tempfile.mkdtemp(prefix="bench-retrieval-", dir=args.workdir))
    import faiss

    print(f"CPU cores {os.cpu_count()}, FAISS {faiss.__version__} ({faiss.omp_get_max_threads()} threads), numpy {np.__version__}")
    try:
        if args.part in ("build", "all"):
            bench_build(work, args.vitb, args.remove_polyps, args.steps)
        if args.part in ("query", "all"):
            bench_query(work, args.entries, args.dim, args.grid, args.queries)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
