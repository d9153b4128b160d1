"""The attributes a bundle was trained with, read once for everyone who asks: bundle.json's "attributes" section
({"names": [...], "values": {name: [...]}}, written by engine.export.compact_export), what a request may ask of
it, and the indices the U-Net takes (0 = not asked, i = the i-th value) — for the pipeline, the batch job's
pre-flight check and training's batches alike. numpy-free, torch-free."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from engine.bundle import Bundle
from engine.errors import BundleError, InputError

ATTRIBUTES = "attributes"  # the U-Net input and the manifest section of a bundle trained with attributes


def bundle_attribute_values(bundle: Bundle) -> dict[str, list[str]] | None:
    """The bundle's attributes as {name: values} in the U-Net's column order, or None when it was trained without;
    BundleError naming bundle.json when the section is malformed."""
    section = bundle.manifest.get(ATTRIBUTES)
    if section is None:
        return None
    names = section.get("names") if isinstance(section, dict) else None
    values = section.get("values") if isinstance(section, dict) else None
    if (not isinstance(names, list) or not names or not isinstance(values, dict)
            or any(not isinstance(values.get(n), list) or not values.get(n) for n in names)):
        raise BundleError(bundle.root / "bundle.json", 'the attributes section must be {"names": [...], "values": '
                                                       '{name: [values, ...]}} with values for every name')
    return {name: list(values[name]) for name in names}


def check_asked_attributes(bundle: Bundle, values: Mapping[str, list[str]] | None,
                           asked: Mapping[str, str] | None) -> None:
    """InputError naming the bundle when ``asked`` ({name: value}) is not something it was trained with
    (``values``: bundle_attribute_values)."""
    if not asked:
        return
    if values is None:
        raise InputError(f"the bundle {bundle.name!r} was not trained with attributes (asked "
                         f"{', '.join(f'{k} {v}' for k, v in asked.items())}); ask none (--attributes auto or "
                         "none), or use a model trained with `main.py train --preset compact --attributes`")
    for name, value in asked.items():
        if name not in values:
            raise InputError(f"the compact model {bundle.name!r} was trained with the attributes "
                             f"{', '.join(values)}, not {name!r}")
        if value not in values[name]:
            raise InputError(f"the compact model {bundle.name!r} knows the {name} values "
                             f"{', '.join(values[name])}, not {value!r}")


def attribute_indices(columns: Iterable[tuple[str, Iterable[str]]], asked: Mapping[str, str | None]) -> list[int]:
    """One index per (name, values) column: i + 1 for the i-th value asked, 0 where nothing (or an unknown value)
    is asked."""
    indices = []
    for name, values in columns:
        values = list(values)
        indices.append(values.index(asked[name]) + 1 if asked.get(name) in values else 0)
    return indices
