"""The retrieval mask proposer (Polyp-Gen's hierarchical retrieval): where in a frame a polyp belongs.

- features.py — DINOv2 patch features from a "dinov2" bundle (onnxruntime), the frame → patch-grid geometry;
- database/   — the on-disk database (FAISS index of global features, memory-mapped local features, masks):
                its layout, reader and writer;
- build.py    — filling it from polyp frames (optionally made polyp-free by the inpainting engine) and
                curator-supplied normal frames, streaming, with per-stage timing;
- proposer.py — global top-K retrieval, in-mask patch matching, DBSCAN, scored and merged proposals;
- explain.py  — the --explain picture;

No torch here: the feature model runs in onnxruntime; export lives in engine.export.dinov2_export.

    from engine.retrieval import RetrievalProposer
    proposer = RetrievalProposer.open(db_path)            # the feature bundle the database records
    proposals = proposer.propose(frame_rgb_uint8, top_k=5)
"""

# Imported on first use, so that `import engine.cli.retrieval` (main.py's argument parser) stays light.
_EXPORTS = {
    "Candidate": "engine.retrieval.proposer",
    "DatabaseError": "engine.retrieval.database",
    "FeatureExtractor": "engine.retrieval.features",
    "FrameFeatures": "engine.retrieval.features",
    "MeanColourExtractor": "engine.retrieval.features",
    "PatchGrid": "engine.retrieval.features",
    "Proposal": "engine.retrieval.proposer",
    "RetrievalDatabase": "engine.retrieval.database",
    "RetrievalProposer": "engine.retrieval.proposer",
}
__all__ = [
    "Candidate",
    "DatabaseError",
    "FeatureExtractor",
    "FrameFeatures",
    "MeanColourExtractor",
    "PatchGrid",
    "Proposal",
    "RetrievalDatabase",
    "RetrievalProposer",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
