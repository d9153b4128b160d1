"""Transplant: the curator's own polyps moved to new places (copy-paste, the baseline every generator must beat,
and the start of the model-harmonized transplant).

- ``donors``  — polyps cut from the input's train frames with a soft margin and a ring of their mucosa;
- ``fitting`` — size, rotation, flip, elastic warp, and Lab colour matched to the mucosa around the new place;
- ``compose`` — placing a fitted donor on free mucosa and pasting it (hard with a soft margin, or Poisson).

Torch-free (numpy, OpenCV): it runs on the batch job's inference path.
"""

from engine.transplant.compose import HARMONIZE_MODES, NoPlace, Transplant, transplant
from engine.transplant.donors import Donor, cut_donors

__all__ = ["HARMONIZE_MODES", "Donor", "NoPlace", "Transplant", "cut_donors", "transplant"]
