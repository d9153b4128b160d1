"""The judge's torch code (training and export only; never imported by the inference path): the compact
U-Net (model), its TrainingTask for the one trainer (task), and the judge training command's work (train)."""
