"""The polyp judge at run time: a "segmenter" bundle in onnxruntime (no torch).

``Judge.from_bundle(path)``; ``judge.look(frame)`` → ``JudgeView``: the polyp probability of every frame
pixel (the model's S × S map resized back over the whole frame), the judge's mask (p > threshold), the frame
polyp score, and the encoder embedding. ``judge.verdict(frame, region, mode)`` is the judge's opinion of a
variant (engine.judge.scores.judge_region). The judge is an evaluation tool, not a diagnostic device.

``JudgeFeatures`` wraps a judge as a feature extractor for the quality report (``--features judge``): the
global feature of a frame is the encoder's bottleneck averaged over space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.bundle import Bundle
from engine.judge import scores
from engine.judge.preprocess import check_rgb, prepare_batch, resize_probability
from engine.runtime.opening import BundleSource, OnePartModel, Signature

DEFAULT_JUDGE = "polyp-judge"  # exported_models/polyp-judge
BATCH = 8


def default_judge_bundle() -> Path:
    from engine.bundle.format import find_bundle

    return find_bundle(DEFAULT_JUDGE)


@dataclass
class JudgeView:
    probability: np.ndarray  # float32 (H, W) in [0, 1], frame size
    threshold: float
    embedding: np.ndarray  # float32 (D,)

    @property
    def mask(self) -> np.ndarray:
        return self.probability > self.threshold

    @property
    def score(self) -> float:
        """Frame polyp score: how sure the judge is that a polyp-sized blob is somewhere in the frame."""
        return scores.peak_score(self.probability)


class Judge(OnePartModel):
    KIND = "segmenter"
    REFUSAL = 'a judge ("segmenter"; make one with `main.py train-judge`)'
    ROLE = "judge"

    def __init__(self, bundle: Bundle, part):
        super().__init__(bundle, part)
        manifest = bundle.manifest
        self.size = int(manifest["image_size"][0])
        self.mean = [float(v) for v in manifest["image_mean"]]
        self.std = [float(v) for v in manifest["image_std"]]
        self.threshold = float(manifest["threshold"])
        self.dim = int(manifest["embedding_dim"])
        self.input_name = manifest.get("input_name", "pixel_values")
        # the probability and the embedding (a newer bundle has patch features after them, for retrieval)
        self.output_names = list(manifest.get("output_names", ("probability", "embedding")))[:2]

    @classmethod
    def from_bundle(cls, source: BundleSource | None = None, provider: str = "auto", threads: int | None = None,
                    verify_hashes: bool = True) -> Judge:
        """The judge of ``source``, by default exported_models/polyp-judge."""
        return super().from_bundle(default_judge_bundle() if source is None else source, provider, threads,
                                   verify_hashes)

    @classmethod
    def signature(cls, manifest: dict) -> Signature:
        size = int(manifest["image_size"][0])
        names = list(manifest.get("output_names", ("probability", "embedding")))
        return {manifest.get("input_name", "pixel_values"): (None, 3, size, size)}, tuple(names)

    def describe(self) -> dict:
        return {"name": self.name, "kind": "segmenter", "bundle_id": self.bundle_id, "path": str(self.bundle.root),
                "image_size": self.size, "threshold": self.threshold, "dim": self.dim, "provider": self.provider,
                "random_weights": bool(self.bundle.manifest.get("random_weights"))}

    def run(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Model-size probabilities (B, S, S) and embeddings (B, D) of frames (each resized whole)."""
        probabilities, embeddings = [], []
        for start in range(0, len(frames), BATCH):
            batch = prepare_batch(frames[start:start + BATCH], self.size, self.mean, self.std)
            probability, embedding = self.part.run(self.output_names, {self.input_name: batch})
            probabilities.append(np.asarray(probability, np.float32)[:, 0])
            embeddings.append(np.asarray(embedding, np.float32).reshape(len(batch), -1))
        if not probabilities:
            return np.zeros((0, self.size, self.size), np.float32), np.zeros((0, self.dim), np.float32)
        return np.concatenate(probabilities), np.concatenate(embeddings)

    def look_batch(self, frames: Sequence[np.ndarray]) -> list[JudgeView]:
        frames = [check_rgb(f) for f in frames]
        probabilities, embeddings = self.run(frames)
        return [JudgeView(resize_probability(p, f.shape[1], f.shape[0]), self.threshold, e)
                for f, p, e in zip(frames, probabilities, embeddings)]

    def look(self, frame: np.ndarray) -> JudgeView:
        return self.look_batch([frame])[0]

    def verdict(self, frame: np.ndarray, region: np.ndarray, mode: str) -> scores.RegionVerdict:
        return scores.judge_region(self.look(frame).probability, region, mode, self.threshold)


class JudgeFeatures:
    """A judge as the quality report's feature model: global feature = the encoder embedding."""

    kind = "segmenter"

    def __init__(self, judge: Judge):
        self.judge = judge
        self.bundle = judge.bundle
        self.dim = judge.dim
        self.provider = judge.provider
        self.provider_note = judge.provider_note

    @property
    def name(self) -> str:
        return self.judge.name

    @property
    def bundle_id(self) -> str:
        return self.judge.bundle_id

    def describe(self) -> dict:
        return {**self.judge.describe(), "features": "judge encoder bottleneck, averaged over space"}

    def extract_batch(self, frames):
        from engine.retrieval.features import FrameFeatures

        _, embeddings = self.judge.run([check_rgb(f) for f in frames])
        return [FrameFeatures(local=e[None, :], global_=e) for e in embeddings]
