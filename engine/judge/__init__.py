"""The polyp judge at run time (torch-free, onnxruntime only): the project's own polyp segmenter scoring frames
and variants.

- ``preprocess``    — frames → the judge's input (whole frame resized to a square, normalised); the lab's
                      training batches use the same code, so training and inference see identical pixels;
- ``scores``        — Dice, IoU, the frame polyp score and the judge's verdict on a variant's labelled region;
- ``model``         — a "segmenter" bundle in onnxruntime → probability map, polyp score, encoder embedding;
- ``accuracy``      — a segmenter's Dice / IoU / detection AP over frames with known masks;
- ``detectability`` — the report's per-variant judge figures, aggregated, with the real-frame ceiling;
- ``rejection``     — the batch job's ``--judge`` check of one variant;
- ``model_gate``    — the judge a model bundle recommends for its own synthetic data (bundle.json "judge"), which
                      ``main.py --batch`` and the app use by default when no judge is named.

Training the judge and ``evaluate`` (torch) are the judge lab, engine.evaluation, one floor up.
"""
