"""Polyp size distributions (engine.masks.size_prior): the shipped Kvasir-SEG prior, sizes measured from an
input's masks, sampling that follows them (a two-sample Kolmogorov–Smirnov test), and the --sizes narrowing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.stats import ks_2samp

from engine.errors import InputError
from engine.masks import size_prior
from engine.masks.size_prior import SizeDistribution, job_sizes, kvasir_seg_prior, measure, parse_sizes, size_bin

FRAME = (400, 500)  # height, width


def disc_masks(sizes: np.ndarray, per_mask: int = 2) -> list[np.ndarray]:
    """Masks holding discs of the given sizes (fractions of the frame), `per_mask` apart from each other."""
    height, width = FRAME
    masks = []
    for start in range(0, len(sizes), per_mask):
        mask = np.zeros(FRAME, np.uint8)
        for index, size in enumerate(sizes[start:start + per_mask]):
            radius = int(round(np.sqrt(size * height * width / np.pi)))
            centre = (width // 4 + index * width // 2, height // 2)
            cv2.circle(mask, centre, radius, 255, -1)
        masks.append(mask)
    return masks


@pytest.fixture(scope="module")
def known_sizes() -> np.ndarray:
    """300 polyp sizes, log-normal around 4 % of the frame (0.5 %–15 %), as an input's masks might have."""
    rng = np.random.default_rng(11)
    return np.clip(np.exp(rng.normal(np.log(0.04), 0.6, 300)), 0.005, 0.15)


def test_the_kvasir_seg_prior_ships_and_samples_in_range():
    prior = kvasir_seg_prior()
    assert prior.source == "kvasir-seg prior"
    assert len(prior.quantiles) == 101 and list(prior.quantiles) == sorted(prior.quantiles)
    assert 0.0 < prior.quantiles[0] < 0.01 and prior.quantiles[-1] <= size_prior.MAX_SIZE
    assert 0.08 < prior.quantiles[50] < 0.13  # Kvasir-SEG's median polyp covers about a tenth of its frame
    rng = np.random.default_rng(0)
    draws = np.array([prior.sample(rng) for _ in range(2000)])
    assert draws.min() >= prior.quantiles[0] and draws.max() <= prior.quantiles[-1]
    assert (draws < 0.02).mean() > 0.03  # diminutive polyps stay in
    assert (draws > 0.20).mean() > 0.15
    assert abs(np.median(draws) - prior.quantiles[50]) < 0.01


def test_the_prior_file_says_where_it_comes_from():
    import json

    data = json.loads(size_prior.KVASIR_SEG_PRIOR_FILE.read_text(encoding="utf-8"))
    assert "Kvasir-SEG" in data["dataset"] and data["frames"] == 1000 and data["count"] >= 1000
    assert {"measured", "unit", "script", "probabilities", "quantiles"} <= set(data)


def test_measure_counts_each_polyp_as_a_fraction_of_its_frame(known_sizes):
    distribution = measure(disc_masks(known_sizes[:40]))
    assert distribution.source == "input"
    expected = np.quantile(known_sizes[:40], [0.0, 0.5, 1.0])
    measured = np.array(distribution.quantiles)[[0, 50, 100]]
    assert np.allclose(measured, expected, rtol=0.05)


def test_sizes_drawn_follow_the_input_and_not_another_distribution(known_sizes):
    distribution = measure(disc_masks(known_sizes))
    rng = np.random.default_rng(5)
    draws = [distribution.sample(rng) for _ in range(200)]
    assert ks_2samp(draws, known_sizes).pvalue > 0.05
    # The same test tells a deliberately different distribution apart: the Kvasir-SEG prior, sizes doubled.
    prior = kvasir_seg_prior()
    assert ks_2samp([prior.sample(rng) for _ in range(200)], known_sizes).pvalue < 0.05
    assert ks_2samp([2 * size for size in draws], known_sizes).pvalue < 0.05


def test_save_and_load_round_trip(tmp_path, known_sizes):
    distribution = measure(disc_masks(known_sizes[:20]))
    size_prior.save(distribution, tmp_path / "sizes.json", dataset="fixture")
    loaded = size_prior.load(tmp_path / "sizes.json")
    assert loaded.source == "input"
    assert np.allclose(loaded.quantiles, distribution.quantiles, atol=1e-6)


@pytest.mark.parametrize("sizes, low, high", [("small", 0.0, 0.05), ("large", 0.20, 0.9), ("2-10", 0.02, 0.10),
                                              ("0.5-3%", 0.005, 0.03)])
def test_sizes_narrow_the_distribution(sizes, low, high):
    distribution = job_sizes(kvasir_seg_prior(), sizes)
    assert distribution.source.startswith("kvasir-seg prior, ")
    rng = np.random.default_rng(1)
    draws = np.array([distribution.sample(rng) for _ in range(300)])
    assert draws.min() >= low and draws.max() <= high
    assert draws.max() - draws.min() > (min(high, kvasir_seg_prior().quantiles[-1]) - low) / 3  # spread, not one size


def test_a_range_the_distribution_barely_reaches_is_drawn_uniformly(known_sizes):
    distribution = job_sizes(measure(disc_masks(known_sizes)), "40-60")  # the input's polyps are all < 15 %
    rng = np.random.default_rng(2)
    draws = np.array([distribution.sample(rng) for _ in range(300)])
    assert draws.min() >= 0.40 and draws.max() <= 0.60 and draws.std() > 0.04


def test_all_keeps_the_distribution():
    prior = kvasir_seg_prior()
    assert job_sizes(prior, "all") is prior


@pytest.mark.parametrize("bad", ["tiny", "10-2", "5", "2-95", "-3-4", "a-b", ""])
def test_bad_sizes_say_what_is_allowed_in_one_line(bad):
    with pytest.raises(InputError) as raised:
        parse_sizes(bad)
    message = str(raised.value)
    assert "\n" not in message and repr(bad) in message and "small" in message and "2-10" in message


def test_size_bins_are_the_reports():
    assert [size_bin(v) for v in (0.01, 0.02, 0.049, 0.07, 0.15, 0.5)] == ["<2", "2-5", "2-5", "5-10", "10-20", ">20"]


def test_an_empty_input_has_no_distribution():
    with pytest.raises(InputError):
        SizeDistribution.from_sizes([], "input")


def test_a_missing_or_damaged_distribution_file_names_itself(tmp_path):
    for path, text in ((tmp_path / "missing.json", None), (tmp_path / "damaged.json", '{"source": "x"}')):
        if text is not None:
            path.write_text(text)
        with pytest.raises(InputError, match=path.name):
            size_prior.load(path)
