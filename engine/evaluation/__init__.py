"""Evaluation with a polyp segmenter the project trains itself (the "judge").

Torch-free (the inference path, onnxruntime only):

- ``preprocess``: frames → the judge's input (whole frame resized to a square, normalised); the same code
  prepares training batches, so training and inference see identical pixels;
- ``scores``: Dice, IoU, the frame polyp score and the judge's verdict on a variant's labelled region;
- ``judge``: a "segmenter" bundle in onnxruntime → probability map, polyp score, encoder embedding;
- ``segdata``: frames + masks (any layout the batch job reads, or a PolypForge output) as cached arrays,
  the deterministic held-out split by file-name hash, augmentation;
- ``detectability``: the report's per-variant judge figures, aggregated, with the real-frame ceiling;
- ``rejection``: the batch job's ``--judge`` check of one variant;
- ``boxes``: detection AP50 / AP@[.5:.95] from masks' boxes (pycocotools), for ``evaluate``.

Torch code (training and export only) lives in ``engine.evaluation.training`` and ``engine.export``.
"""
