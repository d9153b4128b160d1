"""Quality-report statistics on generated frames: FD of a set with itself is 0, FD and KID grow along a
blur/noise ladder, KID of two halves of one set is ≈ 0, every number equals a plain numpy/scipy reference,
and features are computed batch by batch (memory flat in N)."""

from __future__ import annotations

import itertools
import json
import tracemalloc

import cv2
import numpy as np
import pytest

from engine.errors import InputError
from engine.metrics import stats
from engine.metrics.features import (
    ImageItem,
    compute_features,
    list_images,
    load_feature_model,
)
from engine.retrieval.features import FeatureExtractor, default_features_bundle
from engine.samples import generate_frame, generate_sample_set

N = 80


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor.from_bundle(default_features_bundle(), provider="cpu", threads=1)


def _features(extractor, frames):
    return np.stack([f.global_ for f in extractor.extract_batch(frames)]).astype(np.float64)


@pytest.fixture(scope="module")
def sets(extractor):
    """Real = frames 0..79; 'synthetic' = other frames (1000..1079) blurred and noised at levels 0..4."""
    base = [generate_frame(i, 160, 128, polyps=i % 2)[0] for i in range(N)]
    other = [generate_frame(1000 + i, 160, 128, polyps=i % 2)[0] for i in range(N)]
    real = _features(extractor, base)
    ladder = []
    for level in range(5):
        rng = np.random.default_rng(level)
        frames = []
        for frame in other:
            if level:
                frame = cv2.GaussianBlur(frame, (0, 0), sigmaX=1.5 * level)
                frame = np.clip(frame + rng.normal(0, 4 * level, frame.shape), 0, 255).astype(np.uint8)
            frames.append(frame)
        ladder.append(_features(extractor, frames))
    return real, ladder


def test_fd_of_a_set_with_itself_is_zero(sets):
    real, ladder = sets
    assert stats.frechet_distance(real, real) < 1e-8
    assert stats.frechet_distance(real, ladder[0]) > 1e-3  # different frames: not zero


def test_fd_and_kid_grow_along_a_blur_noise_ladder(sets):
    # With the random-weight demo DINOv2 this ladder is monotone (checked: FD ≈ 0.021, 0.053, 0.12, 0.16, 0.18),
    # so no stand-in feature is needed.
    real, ladder = sets
    fds = [stats.frechet_distance(real, s) for s in ladder]
    kids = [stats.kid(real, s, subsets=30)["mean"] for s in ladder]
    assert all(b > a * 1.05 for a, b in itertools.pairwise(fds)), fds
    assert all(b > a for a, b in itertools.pairwise(kids)), kids


def test_kid_of_two_halves_of_one_set_is_about_zero(sets):
    real, ladder = sets
    both = np.concatenate([real, ladder[0]])
    halves = stats.kid(both[0::2], both[1::2], subsets=100, subset_size=40)
    distorted = stats.kid(real, ladder[2], subsets=100, subset_size=40)
    assert abs(halves["mean"]) < 2 * halves["std"]
    assert abs(halves["mean"]) < 0.25 * distorted["mean"], (halves, distorted)


def _reference_fd(a, b):
    """Independent route: Tr((Σ₁Σ₂)^½) = Σ √λ(Σ₁^½ Σ₂ Σ₁^½), by symmetric eigendecompositions."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(middle, 0, None)).sum())


def _reference_mmd2(x, y):
    m, n = len(x), len(y)
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_numbers_equal_a_plain_numpy_scipy_reference(sets):
    real, ladder = sets
    for synth in (ladder[1], ladder[4]):
        assert stats.frechet_distance(real, synth) == pytest.approx(_reference_fd(real, synth), rel=1e-6, abs=1e-9)
    x, y = real[:12], ladder[3][:15]
    assert stats.mmd2_unbiased(x, y) == pytest.approx(_reference_mmd2(x, y), rel=1e-9, abs=1e-12)
    # KID = mean/std of the reference MMD² over the same seeded subsets
    rng = np.random.default_rng(7)
    values = []
    for _ in range(5):
        xi = real[rng.choice(N, 10, replace=False)]
        yi = ladder[3][rng.choice(N, 10, replace=False)]
        values.append(_reference_mmd2(xi, yi))
    got = stats.kid(real, ladder[3], subsets=5, subset_size=10, seed=7)
    assert got["mean"] == pytest.approx(np.mean(values), rel=1e-9)
    assert got["std"] == pytest.approx(np.std(values), rel=1e-9)


def test_nearest_equals_brute_force_with_exclusions():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(700, 5)), rng.normal(size=(40, 5))  # > one block of 512 queries
    exclude = [{i % 40, (i * 7) % 40} for i in range(700)]
    dist, idx = stats.nearest(q, r, exclude=exclude)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    full = np.linalg.norm(qn[:, None, :] - rn[None, :, :], axis=2)
    for i, banned in enumerate(exclude):
        full[i, list(banned)] = np.inf
    assert np.array_equal(idx, full.argmin(1))
    assert np.allclose(dist, full.min(1), atol=1e-7)
    loo = stats.real_nn_distances(r)
    self_full = np.linalg.norm(rn[:, None] - rn[None], axis=2) + np.diag(np.full(40, np.inf))
    assert np.allclose(loo, self_full.min(1), atol=1e-7)


class RecordingExtractor:
    """Delegates to the real DINOv2 extractor and records each batch and the traced memory at that moment."""

    def __init__(self, inner):
        self.inner = inner
        self.batches: list[int] = []
        self.name = inner.name

    def extract_batch(self, frames):
        self.batches.append(len(frames))
        return self.inner.extract_batch(frames)


def test_features_are_computed_batch_by_batch_with_flat_memory(tmp_path, extractor):
    generate_sample_set(tmp_path / "set", count=48, seed=3, width=320, height=256)
    image_set = list_images(tmp_path / "set")
    assert len(image_set) == 48  # images/ only: the masks/ beside them are not images of the set
    recorder = RecordingExtractor(extractor)
    features = compute_features(image_set.items[:37], recorder, batch_size=8)
    assert recorder.batches == [8, 8, 8, 8, 5]
    assert features.shape == (37, extractor.dim) and features.dtype == np.float32
    one_by_one = np.stack([extractor.extract(generate_frame_from(item)).global_ for item in image_set.items[:3]])
    assert np.allclose(features[:3], one_by_one, atol=1e-5)

    def peak(count):
        tracemalloc.start()
        try:
            compute_features(image_set.items[:count], extractor, batch_size=4)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(8), peak(48)
    frame_bytes = 320 * 256 * 3
    assert large < small + 6 * frame_bytes, (small, large)  # holding all 48 frames would add 40 frames' bytes


def generate_frame_from(item: ImageItem):
    from engine.dataset.image_reader import read_frame

    return read_frame(item.path)


def test_unreadable_frame_and_missing_inception_bundle_are_clear_errors(tmp_path, extractor):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        compute_features(list_images(tmp_path / "bad").items, extractor)
    with pytest.raises(InputError, match="local Inception bundle"):
        load_feature_model("inception")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        list_images(tmp_path / "empty")


def test_sample_size_warnings():
    assert stats.sample_size_warnings(5000, 5000, 768) == []
    small = " ".join(stats.sample_size_warnings(20, 500, 768))
    assert "only 20 real" in small and "rank-deficient" in small


def _tiny_inception_bundle(folder):
    """A stand-in "inception" bundle: a one-node ONNX (global average pool → (N, 3)) at 75 × 75, to check the
    interface (bundle reading, hash check, preprocessing, batching); not Inception weights."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from engine.metrics.features import sha256_of

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["features"], axis=1)],
        "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, 75, 75])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir()
    onnx.save(model, folder / "model.onnx")
    manifest = {"kind": "inception", "name": "tiny-inception", "image_size": [75, 75], "image_mean": [0, 0, 0],
                "image_std": [1, 1, 1], "input_name": "images", "output_name": "features", "feature_dim": 3,
                "files": {"model.onnx": sha256_of(folder / "model.onnx")}}
    (folder / "bundle.json").write_text(json.dumps(manifest))
    return folder


def test_a_local_inception_bundle_is_used_and_checked(tmp_path):
    from engine.errors import BundleError
    from engine.metrics.features import InceptionExtractor

    bundle = _tiny_inception_bundle(tmp_path / "inception")
    extractor = load_feature_model(bundle, provider="cpu")
    assert isinstance(extractor, InceptionExtractor) and extractor.name == "tiny-inception"
    frames = [generate_frame(i, 160, 128)[0] for i in range(3)]
    got = np.stack([f.global_ for f in extractor.extract_batch(frames)])
    expected = np.stack([cv2.resize(f, (75, 75), interpolation=cv2.INTER_AREA).reshape(-1, 3).mean(0) / 255.0
                         for f in frames])
    assert got.shape == (3, 3) and np.allclose(got, expected, atol=1e-5)
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"x")
    with pytest.raises(BundleError, match="model.onnx: sha256 mismatch"):
        load_feature_model(bundle)
