"""Opening a bundle's model in onnxruntime: what every opener shares.

``bundle_of_kind`` reads a bundle once (every file's sha256 checked), or takes one a caller has already read, and
refuses a bundle of another kind naming its bundle.json. Every pipeline (engine.pipelines) and every one-part
model opens its bundle through it, so a caller that has read the bundle (to choose what to open, or to check it
against a job) hands that Bundle on instead of having it read again.

``OnePartModel`` is the whole opener of a bundle whose model is one ONNX file, ``model.onnx``: the polyp judge
(engine.judge.model), the retrieval feature models (engine.retrieval.features) and the quality report's Inception
model (engine.metrics.features). A subclass names its kind and its part and says which signature its manifest
promises; ``from_bundle`` reads the bundle, loads the part on the asked provider and checks that signature, so a
wrong file fails on load, naming itself, rather than inside the first batch.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from engine.bundle.format import MANIFEST_NAME, Bundle, read_bundle
from engine.errors import BundleError

if TYPE_CHECKING:
    from engine.runtime.session import OnnxPart

BundleSource = str | os.PathLike[str] | Bundle
# (inputs: name → shape with None for any dimension, or None for any shape; output names)
Signature = tuple[dict[str, tuple | None], tuple[str, ...]]


def bundle_of_kind(source: BundleSource, kind: str, refusal: str, verify_hashes: bool = True) -> Bundle:
    """The bundle at ``source`` (read here unless ``source`` is a Bundle already read) when it is of ``kind``;
    else BundleError naming its bundle.json: "kind 'x' is not ``refusal``" (e.g. "an inpainting bundle")."""
    bundle = source if isinstance(source, Bundle) else read_bundle(source, verify_hashes=verify_hashes)
    if bundle.kind != kind:
        raise BundleError(bundle.root / MANIFEST_NAME, f"kind {bundle.kind!r} is not {refusal}")
    return bundle


class OnePartModel:
    """A bundle's one ONNX model, loaded with its signature checked: ``bundle``, ``part``, ``provider`` (what runs
    it), ``provider_note`` (why that is not what was asked, or None), ``name`` and ``bundle_id``."""

    KIND = ""  # the bundle kind it runs
    REFUSAL = ""  # what a bundle of another kind is told it is not: 'a judge ("segmenter")'
    ROLE = "model"  # the part's name in the messages of onnxruntime's load and of the signature check

    def __init__(self, bundle: Any, part: OnnxPart):
        self.bundle = bundle
        self.part = part
        self.provider = part.active_provider
        self.provider_note = part.provider_note

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def bundle_id(self) -> str:
        return self.bundle.bundle_id

    @classmethod
    def read(cls, source: BundleSource, verify_hashes: bool = True) -> Any:
        """The bundle, of this model's kind (a subclass adds what else its manifest must say, or reads another
        format); BundleError naming the file otherwise."""
        return bundle_of_kind(source, cls.KIND, cls.REFUSAL, verify_hashes)

    @classmethod
    def signature(cls, manifest: dict) -> Signature:
        """The inputs and outputs the manifest promises for model.onnx."""
        raise NotImplementedError

    @classmethod
    def from_bundle(cls, source: BundleSource, provider: str = "auto", threads: int | None = None,
                    verify_hashes: bool = True):
        """Read (or take) the bundle, load model.onnx on ``provider`` with ``threads`` onnxruntime threads, check
        its signature. (onnxruntime is imported here, not with this module: importing a model class stays cheap.)"""
        from engine.runtime.providers import plan_providers
        from engine.runtime.session import OnnxPart

        bundle = cls.read(source, verify_hashes)
        part = OnnxPart(bundle.path_of("model"), plan_providers(provider), threads=threads, role=cls.ROLE)
        part.expect(*cls.signature(bundle.manifest))
        return cls(bundle, part)
