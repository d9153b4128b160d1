"""Random masks in a job: their polyp sizes follow the input's own polyps (a two-sample Kolmogorov–Smirnov test
on a fixture of known sizes), else the Kvasir-SEG prior; --sizes narrows them; a bad --sizes is one clear
line; the manifest records the size drawn, the size placed and where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.stats import ks_2samp

import main
from engine.dataset.discovery import discover
from engine.jobs.runner import input_sizes
from engine.jobs.spec import build_spec
from engine.masks.sources import resolve_region
from engine.samples import generate_sample_set

HEIGHT, WIDTH = 256, 320


def mucosa(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:] = (170, 90, 70)
    return frame


@pytest.fixture(scope="module")
def known_input(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """images/ + masks/: 120 frames, each with one round polyp of a known size (log-normal, 1–12 % of the frame)."""
    root = tmp_path_factory.mktemp("known_sizes")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(4)
    sizes = np.clip(np.exp(rng.normal(np.log(0.035), 0.55, 120)), 0.01, 0.12)
    measured = []
    for index, size in enumerate(sizes):
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.circle(mask, (WIDTH // 2, HEIGHT // 2), int(round(np.sqrt(size * HEIGHT * WIDTH / np.pi))), 255, -1)
        Image.fromarray(mucosa()).save(root / "images" / f"f{index:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"f{index:03d}.png")
        measured.append((mask > 0).mean())
    return root, np.array(measured)


def job_distribution(root: Path, tmp_path: Path, sizes: str = "all"):
    spec = build_spec({"input": root, "output": tmp_path / "out", "mask_source": "random", "sizes": sizes})
    return input_sizes(discover(root, None, None, None).frames, spec)


def placed_sizes(distribution, count: int = 200) -> list[float]:
    """Sizes of random masks resolved on an empty, roomy frame with the job's distribution."""
    frame = mucosa(480, 600)
    regions = [resolve_region("add", "random", frame, None, [], 15, seed, sizes=distribution) for seed in range(count)]
    for region in regions:
        assert region.size["size_placed"] == pytest.approx(region.mask.mean(), abs=1e-6)
    return [region.size["size_placed"] for region in regions]


def test_random_masks_follow_the_inputs_polyp_sizes(known_input, tmp_path):
    root, known = known_input
    distribution = job_distribution(root, tmp_path)
    assert distribution.source == "input"
    placed = placed_sizes(distribution)
    assert ks_2samp(placed, known).pvalue > 0.05
    # Without the input's sizes (the Kvasir-SEG prior, polyps three times larger) the test tells them apart.
    assert ks_2samp(placed_sizes(None), known).pvalue < 0.05


def test_an_input_without_masks_takes_the_kvasir_seg_prior(tmp_path):
    generate_sample_set(tmp_path / "in", count=3, seed=2, with_polyps_every=0)
    assert job_distribution(tmp_path / "in", tmp_path).source == "kvasir-seg prior"


@pytest.mark.parametrize("sizes, low, high", [("small", 0.0, 0.05), ("large", 0.20, 0.9), ("2-10", 0.02, 0.10)])
def test_sizes_are_honoured(known_input, tmp_path, sizes, low, high):
    root, _ = known_input
    distribution = job_distribution(root, tmp_path, sizes)
    assert distribution.source.startswith("input, ")
    frame = mucosa(480, 600)
    for seed in range(40):
        size = resolve_region("add", "random", frame, None, [], 15, seed, sizes=distribution).size
        assert low <= size["size_drawn"] <= high
        assert size["size_source"] == distribution.source


@pytest.mark.parametrize("args, message", [
    (["--mask-source", "random", "--sizes", "huge"], "sizes 'huge' is not all, small"),
    (["--mask-source", "random", "--sizes", "10-2"], "sizes '10-2' is not all, small"),
    (["--mask-source", "user", "--sizes", "small"], "applies to new polyps only"),
])
def test_a_bad_sizes_says_so_in_one_line(tmp_path, capsys, args, message):
    generate_sample_set(tmp_path / "in", count=1, seed=2, with_polyps_every=0)
    assert main.main(["--batch", "--quiet", "--no-judge", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and len(err.splitlines()) == 1


def test_the_manifest_records_the_size(tmp_path):
    generate_sample_set(tmp_path / "in", count=3, seed=6, with_polyps_every=2)
    output = tmp_path / "out"
    assert main.main(["--batch", "--quiet", "--no-judge", "--steps", "2", "--input", str(tmp_path / "in"), "--output", str(output),
                      "--mask-source", "random", "--sizes", "2-10"]) == 0
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert records and all(r["status"] == "ok" for r in records)
    for record in records:
        assert record["size_source"] == "kvasir-seg prior, 2-10 %"  # three frames hold too few polyps to measure
        assert 0.02 <= record["size_drawn"] <= 0.10
        generated = [i for i in record["instances"] if i["origin"] == "generated"]
        assert len(generated) == 1
        assert record["size_placed"] == pytest.approx(generated[0]["area"] / (record["width"] * record["height"]), abs=1e-6)
        written = np.asarray(Image.open(output / record["mask"])) > 0  # its label's polygon, drawn
        assert record["size_placed"] == pytest.approx(written.mean(), rel=0.05)
        assert record["size_placed"] <= record["size_drawn"] * 1.3
    assert "sizes" in json.loads((output / "job.json").read_text())["settings"]
