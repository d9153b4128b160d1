"""What a batch job asks an attribute-conditioned bundle (``--attributes``), and what each variant records of it.

Only a bundle with an "attributes" section (a compact model trained with ``--attributes``) is asked anything, and
only in mode add ("Normal", the removal prompt, takes none). The job's plan (engine.captioning.conditioning):
``auto`` draws colour, surface and elevation per variant from the input's annotated polyps (its mask files, up to
``ATTRIBUTE_SAMPLE_FRAMES`` of them captioned, when they hold at least MIN_INPUT_POLYPS polyps) or else from the
Kvasir-SEG prior; a list of words asks those of every variant; ``none`` asks nothing. Size and outline are
measured on each variant's own mask. ``auto`` on a bundle without the section asks nothing and records nothing:
the job is what it was; asked words are refused before the job starts.

A variant's manifest line records ``attributes_asked`` ({name: value}, what the model was fed),
``attributes_derived`` (which of them were measured on the mask) and ``attributes_source`` (user, input,
kvasir-prior or none); its generated polyps' COCO annotations carry ``attributes``.
"""

from __future__ import annotations

from engine.captioning.captioner import caption_frame
from engine.captioning.conditioning import (
    DERIVED,
    INPUT_SOURCE,
    MIN_INPUT_POLYPS,
    NONE_SOURCE,
    USER_SOURCE,
    AttributeDistribution,
    AttributePlan,
    derived_attributes,
    kvasir_seg_attribute_prior,
    parse_attributes,
    polyp_attributes,
)
from engine.errors import InputError, PolypForgeError
from engine.pipelines.attribute_inputs import bundle_attribute_values, check_asked_attributes

ATTRIBUTE_SAMPLE_FRAMES = 200  # annotated frames captioned for an input's attribute distribution, evenly spread


def check_attributes_fit(spec, bundle) -> None:
    """InputError, before the job starts, when it asks words (``--attributes red,…``) the bundle cannot take, or
    guides attributes (``--attribute-guidance``) of a bundle trained without them (with ``--attributes none`` it
    guides nothing: a variant asked nothing is painted, and recorded, as without it)."""
    asked = parse_attributes(getattr(spec, "attributes", "auto"))
    values = bundle_attribute_values(bundle)
    if isinstance(asked, dict):
        check_asked_attributes(bundle, values, asked)
    if getattr(spec, "attribute_guidance", None) is None:
        return
    if values is None:
        raise InputError(f"{bundle.root}: the model {bundle.name!r} was not trained with attributes, so there is "
                         "nothing for attribute guidance (--attribute-guidance) to guide: leave it out, or use a "
                         "bundle trained with --attributes")


def input_attributes(frames, spec) -> AttributeDistribution | None:
    """The chosen attributes of the input's own polyps (the frames the job derives from that have mask files),
    read from at most ATTRIBUTE_SAMPLE_FRAMES of them; None when they hold fewer than MIN_INPUT_POLYPS. An
    unreadable frame or mask is left out here: its own variants record the failure."""
    from engine.dataset.image_reader import read_frame, read_mask

    annotated = [frame for frame in frames if frame.split in spec.from_splits and not frame.made_by
                 and frame.mask_path is not None]
    polyps = []
    for frame in annotated[::max(1, -(-len(annotated) // ATTRIBUTE_SAMPLE_FRAMES))]:
        try:
            caption = caption_frame(read_frame(frame.path), read_mask(frame.mask_path))
        except (PolypForgeError, OSError):  # NoPolyp (an empty mask) among them
            continue
        polyps.extend(polyp_attributes(p.attributes) for p in caption.polyps)
    if len(polyps) < MIN_INPUT_POLYPS:
        return None
    return AttributeDistribution.of_polyps(polyps, INPUT_SOURCE)


def job_attributes(frames, spec, bundle) -> AttributePlan | None:
    """The job's attribute plan, or None when the bundle takes no attributes or the mode asks none (nothing
    asked, nothing recorded). Whether asked words fit the bundle was checked when it was opened
    (engine.jobs.frame_work.check_bundle_fits)."""
    accepted = bundle_attribute_values(bundle)
    if accepted is None or spec.mode != "add":
        return None
    asked = parse_attributes(spec.attributes)
    if asked == "none":
        return AttributePlan(NONE_SOURCE, accepted=accepted)
    if isinstance(asked, dict):
        return AttributePlan(USER_SOURCE, fixed=asked, accepted=accepted)
    distribution = input_attributes(frames, spec) or kvasir_seg_attribute_prior()
    return AttributePlan(distribution.source, distribution=distribution, accepted=accepted)


def variant_attributes(plan: AttributePlan | None, seed: int, frame, mask,
                       derived: dict[str, str] | None = None) -> tuple[dict[str, str] | None, dict]:
    """(what the pipeline is asked, what the manifest line records) for the variant with ``seed`` painting into
    ``mask`` of ``frame``; ``derived``: its size and outline when already measured on this mask. Only words the
    bundle was trained on (the plan's ``accepted``, read once when the job began) are asked."""
    if plan is None:
        return None, {}
    values = plan.accepted or {}
    if not plan.asks:
        return {}, {"attributes_asked": {}, "attributes_derived": [], "attributes_source": plan.source}
    measured = derived if derived is not None else derived_attributes(frame, mask)
    everything = {**plan.chosen(seed), **measured}
    asked = {name: everything[name] for name in values if everything.get(name) in values[name]}
    return asked, {"attributes_asked": asked, "attributes_derived": [n for n in DERIVED if n in asked],
                   "attributes_source": plan.source}
