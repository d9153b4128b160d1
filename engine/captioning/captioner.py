"""Captions of one frame from its pixels and its mask: per polyp, the measured attributes and their sentence.

``caption_frame(frame, mask)`` → ``FrameCaption`` with one ``PolypCaption`` per polyp (8-connected
components of the mask, largest first, as engine.masks.instances splits them for the batch job) and the
frame's text (engine.captioning.template.describe_frame). Deterministic: the same pixels give the same
attributes, numbers and words. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.captioning import attributes as measure
from engine.captioning.scene import make_scene
from engine.captioning.template import describe, describe_frame
from engine.errors import InputError

MEASURE_VERSION = "measured-1"  # bump when a threshold or a measure changes: it goes into every row


class NoPolyp(InputError):
    """The mask holds no polyp: nothing to describe (a skip, not a failure)."""


@dataclass
class PolypCaption:
    index: int  # 1-based, largest polyp first
    attributes: dict  # the words (colour, surface, …) and "measures": the numbers behind them
    text: str


@dataclass
class FrameCaption:
    polyps: list[PolypCaption]
    text: str  # the frame's sentence: what the batch job reads for the frame

    @property
    def attributes(self) -> dict:
        """The frame row's attributes: the largest polyp's, with the polyp count."""
        return self.polyps[0].attributes


def _rounded(measures: dict) -> dict:
    return {key: (round(float(value), 4) if isinstance(value, float) else value) for key, value in sorted(measures.items())}


def caption_frame(frame: np.ndarray, mask: np.ndarray) -> FrameCaption:
    """NoPolyp when the mask holds no polyp (nothing to describe); InputError when it does not fit the frame."""
    scene = make_scene(frame, mask)
    if not scene.polyps:
        raise NoPolyp("the mask holds no polyp (no component of 16 pixels or more)")
    findings, background_measures = measure.background(scene)
    polyps = []
    for index in range(len(scene.polyps)):
        numbers: dict = dict(background_measures)
        values = {}
        for name in ("colour", "surface", "size", "outline", "elevation", "position", "partly_out_of_view", "lighting"):
            value, found = getattr(measure, name)(scene, index)
            values[name] = value
            numbers.update(found)
        attributes = {"polyp": index + 1, "polyps": len(scene.polyps), **values, "background": list(findings),
                      "measures": _rounded(numbers)}
        polyps.append(PolypCaption(index=index + 1, attributes=attributes, text=describe(attributes)))
    return FrameCaption(polyps=polyps, text=describe_frame([p.attributes for p in polyps]))
