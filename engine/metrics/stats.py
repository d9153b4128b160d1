"""The numbers: Fréchet distance, KID, nearest-real distances, sample-size warnings. numpy + scipy only.

- Fréchet distance (Heusel et al. 2017) between Gaussians fitted to two feature sets:
  ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), the matrix square root by ``scipy.linalg.sqrtm`` (with a tiny
  diagonal offset when the product is singular, as pytorch-fid does). Biased upward at small N: compare
  numbers only at equal sample sizes.
- KID (Bińkowski et al. 2018): the unbiased estimate of MMD² with the cubic polynomial kernel
  k(x, y) = (xᵀy / d + 1)³, averaged over random subsets (mean ± std over subsets). Unbiased: ≈ 0 (and
  can be slightly negative) when both sets come from one distribution.
- Nearest-real distance: cosine distance (‖x/‖x‖ − y/‖y‖‖, 0 … 2) from each synthetic image to the closest
  real one, computed block by block.
"""

from __future__ import annotations

import numpy as np

from engine.errors import InputError

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N − 1) covariance, float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"need at least 2 feature vectors for a covariance, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_moments(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise InputError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # ≥ 0 in exact arithmetic; round-off can give −1e-12


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mu1, s1 = moments(a)
    mu2, s2 = moments(b)
    return frechet_distance_from_moments(mu1, s1, mu2, s2)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (diagonals of K_xx, K_yy left out)."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise InputError(f"KID needs at least 2 vectors per set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(real: np.ndarray, synthetic: np.ndarray, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> dict:
    """KID: unbiased MMD² over `subsets` random subsets of min(subset_size, n_real, n_synthetic) per set
    (drawn without replacement inside a subset); {"mean", "std", "subsets", "subset_size"}."""
    x, y = np.asarray(real, np.float64), np.asarray(synthetic, np.float64)
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise InputError(f"KID needs at least 2 images per set, got {x.shape[0]} real and {y.shape[0]} synthetic")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets, np.float64)
    for i in range(subsets):
        xi = x[rng.choice(x.shape[0], size, replace=False)]
        yi = y[rng.choice(y.shape[0], size, replace=False)]
        values[i] = mmd2_unbiased(xi, yi)
    return {"mean": float(values.mean()), "std": float(values.std()), "subsets": subsets, "subset_size": int(size)}


def normalise(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def nearest(queries: np.ndarray, references: np.ndarray, exclude: list[set[int]] | None = None,
            block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query row: (distance, index) of its nearest reference row, cosine distance ‖q̂ − r̂‖.

    ``exclude[i]`` lists reference indices query i may not match (its own source frame, itself)."""
    q, r = normalise(queries), normalise(references)
    distances = np.full(q.shape[0], np.inf)
    indices = np.full(q.shape[0], -1, dtype=np.int64)
    for start in range(0, q.shape[0], block):
        chunk = q[start:start + block]
        sq = np.maximum(2.0 - 2.0 * (chunk @ r.T), 0.0)  # unit vectors: ‖a − b‖² = 2 − 2 a·b
        if exclude is not None:
            for row in range(chunk.shape[0]):
                banned = exclude[start + row]
                if banned:
                    sq[row, list(banned)] = np.inf
        best = np.argmin(sq, axis=1)
        value = sq[np.arange(chunk.shape[0]), best]
        distances[start:start + chunk.shape[0]] = np.sqrt(value)
        indices[start:start + chunk.shape[0]] = np.where(np.isfinite(value), best, -1)
    return distances, indices


def real_nn_distances(real: np.ndarray) -> np.ndarray:
    """Leave-one-out: each real image's distance to its nearest *other* real image."""
    distances, _ = nearest(real, real, exclude=[{i} for i in range(real.shape[0])])
    return distances


def sample_size_warnings(n_real: int, n_synthetic: int, dim: int, label: str = "") -> list[str]:
    """Plain-language warnings when the sets are too small for FD / KID to mean much."""
    where = f"{label}: " if label else ""
    warnings = []
    for name, n in (("real", n_real), ("synthetic", n_synthetic)):
        if n < 50:
            warnings.append(f"{where}only {n} {name} images: FD and KID are dominated by sampling noise "
                            "(use hundreds, ideally thousands)")
        elif n <= dim:
            warnings.append(f"{where}{n} {name} images for {dim}-dimensional features: the covariance is "
                            "rank-deficient and FD is strongly biased upward; compare FD only between runs "
                            "with the same sample sizes, and prefer KID")
        elif n < 2000:
            warnings.append(f"{where}{n} {name} images: FD is biased upward at this size (it falls as N grows); "
                            "compare only at equal N")
    return warnings
