"""Procedurally generated, seeded colonoscopy-like sample frames and polyp masks.

Used by the demo and the tests instead of real patient frames.
"""

from .frames import generate_frame, generate_sample_set

__all__ = ["generate_frame", "generate_sample_set"]
