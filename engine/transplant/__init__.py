"""Transplant: the curator's own polyps moved to new places (copy-paste, the baseline every generator must beat,
and the start of the model-harmonized transplant).

- ``donors``  — polyps cut from the input's train frames with a soft margin and a ring of their mucosa;
- ``fitting`` — size, rotation, flip, elastic warp, and Lab colour matched to the mucosa around the new place;
- ``compose`` — placing a fitted donor on free mucosa and pasting it (hard with a soft margin, or Poisson).

Torch-free (numpy, OpenCV): it runs on the batch job's inference path.
"""

from engine.masks.placement import NoPlace
from engine.transplant.compose import (
    DEFAULT_HARMONIZE,
    DEFAULT_STRENGTH,
    HARMONIZE_MODES,
    Transplant,
    harmonize_region,
    transplant,
    transplant_variant,
)
from engine.transplant.donors import Donor, DonorPool, cut_donors

__all__ = ["DEFAULT_HARMONIZE", "DEFAULT_STRENGTH", "HARMONIZE_MODES", "Donor", "DonorPool", "NoPlace",
           "Transplant", "cut_donors", "harmonize_region", "transplant", "transplant_variant"]
