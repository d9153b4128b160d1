"""CCIS-Diff's ControlNet (PyTorch; export and training only — never imported by the inference path)."""
