"""The judge lab (torch; never imported by the inference path): training the project's polyp segmenter
(the "judge") and ``evaluate`` — does synthetic data help a downstream segmenter?

- ``segdata``             — frames + masks (any layout the batch job reads, or a PolypForge output) as cached
                            arrays, the deterministic held-out split, augmentation;
- ``judge_task``          — the segmenter's TrainingTask for the one trainer;
- ``train_judge``         — the ``train-judge`` command's work: train, export a "segmenter" bundle, card;
- ``evaluate``            — real vs real + synthetic, seeds, paired statistics, report;
- ``ultralytics_trainer`` — ``evaluate --trainer ultralytics`` (runs ``ultralytics_worker`` in its own Python);
- ``leaks``, ``evaluation_report``, ``model_card``, ``pictures`` — its checks, report, card and grids.

The judge's torch-free runtime (scoring, rejection, detectability) is engine.judge, one floor down; the network
is engine.models.segmenter.
"""
