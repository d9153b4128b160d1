"""Quality report: how close synthetic frames are to real ones, measured offline with a local feature model.

- ``features``: image folders → global feature vectors, streamed in batches (DINOv2 bundle by default, a local
  Inception bundle when supplied);
- ``stats``: Fréchet distance, KID (unbiased MMD², cubic polynomial kernel), nearest-real distances;
- ``plots``: the t-SNE scatter, drawn with PIL;
- ``report``: everything together → a self-contained HTML page and a JSON of all figures.

``main.py report --real DIR --synthetic DIR --out DIR [--features BUNDLE]`` is wired in engine.cli.report.

Imports no torch and no Qt.
"""
