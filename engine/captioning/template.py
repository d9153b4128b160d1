"""The CCIS-style sentence from measured attributes.

One polyp: "The polyp is <colour>, <surface>, <size>, <outline>[ and <elevation>], <position>[, partly out of
view], against <background>[, with specular highlights][, in an over-exposed view]."

    The polyp is red, lobulated, large, oval and raised, in the centre, against clean mucosa, with specular
    highlights.

A frame with several polyps (the text the batch job reads for the frame): "N polyps. The largest is …" with
the largest polyp's attributes, since the job generates every polyp of the frame under one prompt.
Words never depend on anything but the attributes, so the same attributes always give the same text.
"""

from __future__ import annotations

from engine.captioning.attributes import position_words

FINDING_WORDS = {"debris": "yellowish debris", "bubbles": "bubbles", "blood": "blood"}


def _listing(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def background_words(findings: list[str]) -> str:
    """'clean mucosa', 'clean mucosa and a dark lumen', 'mucosa with yellowish debris, blood and a dark lumen'."""
    dirt = [FINDING_WORDS[f] for f in findings if f in FINDING_WORDS]
    lumen = ["a dark lumen"] if "lumen" in findings else []
    if not dirt:
        return " and ".join(["clean mucosa"] + lumen)
    return f"mucosa with {_listing(dirt + lumen)}"


def describe(attributes: dict, subject: str = "The polyp") -> str:
    """The sentence for one polyp's attributes (the dict engine.captioning.captioner writes)."""
    shape = _listing([attributes["size"], attributes["outline"]] + ([attributes["elevation"]] if attributes.get("elevation") else []))
    parts = [attributes["colour"], attributes["surface"], shape, position_words(attributes["position"])]
    if attributes.get("partly_out_of_view"):
        parts.append("partly out of view")
    parts.append(f"against {background_words(attributes['background'])}")
    lighting = attributes.get("lighting", [])
    if "specular highlights" in lighting:
        parts.append("with specular highlights")
    if "over-exposed" in lighting:
        parts.append("in an over-exposed view")
    return f"{subject} is " + ", ".join(parts) + "."


def describe_frame(polyps: list[dict]) -> str:
    """The frame's text: its one polyp's sentence, or 'N polyps. The largest is …'."""
    if len(polyps) == 1:
        return describe(polyps[0])
    return f"{len(polyps)} polyps. " + describe(polyps[0], subject="The largest")
