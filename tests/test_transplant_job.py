"""The batch job's transplant mode end to end on generated frames: donors from train frames only, placements off
existing polyps, the black border and overlays, the label the pasted mask exactly, nothing changed outside the
paste (and the model's band), a hard paste the donor's own pixels up to the colour match and every variant
regenerated from its manifest record, kill -9 then resume gives the same bytes, bad settings one line each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from engine.dataset.image_reader import read_frame, read_mask
from engine.errors import InputError
from engine.jobs import build_spec, run_job
from engine.masks.instances import instances_from_mask, split_instances
from engine.masks.placement import polyp_free, visible_mucosa
from engine.samples import generate_sample_set
from engine.transplant import cut_donors
from engine.transplant.compose import free_area, soft_alpha
from engine.transplant.fitting import Fit, lab_statistics, match_colour, transform
from engine.transplant.compose import MIN_RING_PX, RING_FRACTION, equivalent_diameter


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """Train frames with polyps (donors) and test frames whose polyps are never to be used."""
    root = tmp_path_factory.mktemp("transplant-input")
    generate_sample_set(root / "gen", count=8, seed=5, width=320, height=256, with_polyps_every=1)
    for split, names in (("train", range(0, 6)), ("test", range(6, 8))):
        for sub in ("images", "masks"):
            (root / "in" / sub / split).mkdir(parents=True, exist_ok=True)
        for i in names:
            shutil.copy(root / "gen" / "images" / f"sample_{i:03d}.png", root / "in" / "images" / split)
            shutil.copy(root / "gen" / "masks" / f"sample_{i:03d}.png", root / "in" / "masks" / split)
    return root / "in"


def _job(frames: Path, output: Path, **values):
    return run_job(build_spec({"input": frames, "output": output, "mode": "transplant", "variants": 2, "seed": 3,
                               "provider": "cpu", "threads": 1, "resume": False, **values}))


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines() if line.strip()]


def _source(frames: Path, record: dict) -> tuple[np.ndarray, np.ndarray]:
    rel = record["source_frame"]
    return read_frame(frames / "images" / rel), read_mask(frames / "masks" / rel)


def _regenerate(frames: Path, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """The pasted label and image of a harmonize-none variant, redone from its manifest record alone."""
    moved = record["transplant"]
    donor_frame = moved["donor"]["frame"]
    donor_pixels = read_frame(frames / "images" / donor_frame)
    donor = cut_donors(donor_pixels, split_instances(read_mask(frames / "masks" / donor_frame)), donor_frame,
                       moved["donor"]["frame_sha256"])
    donor = next(d for d in donor if d.polyp == moved["donor"]["polyp"])
    pixels, mask, ring, covered = transform(donor.pixels, donor.mask, donor.ring, Fit(**moved["fit"]))
    target, target_mask = _source(frames, record)
    top, left = moved["place"]["top"], moved["place"]["left"]
    label = np.zeros(target.shape[:2], bool)
    label[top:top + mask.shape[0], left:left + mask.shape[1]] = mask
    free = free_area(target, instances_from_mask(target_mask, "mask"))
    ring_px = max(MIN_RING_PX, round(RING_FRACTION * equivalent_diameter(int(label.sum()))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1, 2 * ring_px + 1))
    target_ring = cv2.dilate(label.astype(np.uint8), kernel).astype(bool) & ~label & free
    matched, _ = match_colour(pixels, ring, lab_statistics(target, target_ring))
    alpha = soft_alpha(mask, covered)
    image = target.copy()
    box = (slice(top, top + mask.shape[0]), slice(left, left + mask.shape[1]))
    blended = image[box].astype(np.float32) * (1 - alpha[..., None]) + matched.astype(np.float32) * alpha[..., None]
    image[box] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return label, image


def test_hard_paste_job(frames, tmp_path):
    summary = _job(frames, tmp_path / "out", harmonize="none")
    records = _records(tmp_path / "out")
    ok = [r for r in records if r["status"] == "ok"]
    assert summary.ok == len(ok) >= 10  # 6 train frames × 2 variants; test frames are not sources
    train_stems = {p.name for p in (frames / "images" / "train").iterdir()}
    for record in ok:
        moved = record["transplant"]
        # donors only from train frames, never from the test frames
        assert Path(moved["donor"]["frame"]).parent.name == "train"
        assert Path(moved["donor"]["frame"]).name in train_stems
        assert moved["harmonize"] == "none" and "strength" not in moved
        assert record["mode"] == "transplant" and record["steps"] == 0
        image = np.asarray(Image.open(tmp_path / "out" / record["image"]).convert("RGB"))
        label = np.asarray(Image.open(tmp_path / "out" / record["mask"])) > 0
        source, source_mask = _source(frames, record)
        # placement: on visible mucosa, clear of the frame's own polyps
        assert label.any() and (label <= visible_mucosa(source)).all()
        assert (label <= polyp_free(instances_from_mask(source_mask, "mask"), *label.shape)).all()
        # the label is the pasted mask exactly, and the image regenerates from the record
        again_label, again_image = _regenerate(frames, record)
        assert (again_label == label).all()
        assert (again_image == image).all()
        # the frame's own polyp is carried into the labels beside the new one
        origins = sorted(i["origin"] for i in record["instances"])
        assert origins.count("transplant") == 1 and origins.count("mask") >= 1
        assert record["size_placed"] == pytest.approx(label.mean(), abs=1e-6)
    coco = json.loads((tmp_path / "out" / "annotations" / "instances.json").read_text())
    assert len(coco["annotations"]) >= 2 * len(ok)


def test_model_harmonized_job_changes_only_the_paste_and_its_band(frames, tmp_path):
    _job(frames, tmp_path / "model", harmonize="model", strength=0.5, steps=4)
    for record in (r for r in _records(tmp_path / "model") if r["status"] == "ok"):
        assert record["transplant"]["strength"] == 0.5 and record["transplant"]["harmonize"] == "model"
        image = np.asarray(Image.open(tmp_path / "model" / record["image"]).convert("RGB"))
        label = np.asarray(Image.open(tmp_path / "model" / record["mask"])) > 0
        source, _ = _source(frames, record)
        changed = (image != source).any(axis=2)
        # footprint = label + its feathered margin (12 % of the diameter), band = 10 % more; 3 px of slack
        reach = round(0.22 * equivalent_diameter(int(label.sum()))) + 3 + 2 * 4
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
        assert (changed <= cv2.dilate(label.astype(np.uint8), kernel).astype(bool)).all()
        assert changed[label].mean() > 0.5  # the model redrew the pasted polyp


def _command(frames: Path, output: Path) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "main.py"), "--batch", "--quiet", "--input", str(frames),
            "--output", str(output), "--mode", "transplant", "--harmonize", "model", "--strength", "0.4",
            "--steps", "6", "--variants", "3", "--threads", "1"]


def test_killed_transplant_job_resumes_to_the_same_bytes(frames, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_command(frames, reference), check=True, capture_output=True, timeout=600)
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_command(frames, interrupted), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    manifest = interrupted / "manifest.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (manifest.exists() and len(manifest.read_bytes().splitlines()) >= 4):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert 4 <= len(manifest.read_bytes().splitlines()) < 18, "the kill must land mid-run"
    resumed = subprocess.run(_command(frames, interrupted), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    for path in sorted(p for p in reference.rglob("*.png")):
        assert path.read_bytes() == (interrupted / path.relative_to(reference)).read_bytes(), path


@pytest.mark.parametrize("values, message", [
    ({"mask_source": "random"}, "mode transplant moves the input's own annotated polyps"),
    ({"harmonize": "blur"}, "harmonize 'blur' is not one of none, poisson, model"),
    ({"harmonize": "none", "strength": 0.3}, "strength applies to harmonize model only"),
    ({"strength": 1.5}, "strength must be in (0, 1]"),
])
def test_bad_transplant_settings_are_one_line(frames, tmp_path, values, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_spec({"input": frames, "output": tmp_path / "o", "mode": "transplant", **values})


def test_harmonize_outside_transplant_is_refused(frames, tmp_path):
    with pytest.raises(InputError, match="apply to mode transplant only"):
        build_spec({"input": frames, "output": tmp_path / "o", "harmonize": "none"})


def test_an_input_without_outlined_polyps_cannot_transplant(tmp_path):
    from engine.jobs import JobCannotStart

    generate_sample_set(tmp_path / "plain", count=2, seed=1, with_polyps_every=0)
    with pytest.raises(JobCannotStart, match="needs train frames with outlined polyps"):
        _job(tmp_path / "plain", tmp_path / "out", harmonize="none")


def test_quality_report_counts_transplants_as_copies_by_design(frames, tmp_path):
    """A transplant nearest to its donor's frame is a copy on purpose: counted and explained, not flagged."""
    from engine.metrics.report import run_report

    _job(frames, tmp_path / "out", harmonize="none")
    real = tmp_path / "real"
    real.mkdir()
    for image in (frames / "images").rglob("*.png"):
        shutil.copy(image, real / image.name)
    result = run_report(real, tmp_path / "out", tmp_path / "report", batch_size=4, judge=None)
    memorisation = json.loads(result.json.read_text())["memorisation"]
    rows = memorisation["per_image"]
    assert memorisation["transplants"] == len(rows)
    for row in rows:
        close = row["distance"] < memorisation["threshold"]
        assert row["flagged"] == (close and not row["copy_by_design"])
        assert not row["copy_by_design"] or close
    assert memorisation["copies_by_design"] == sum(r["copy_by_design"] for r in rows)
    page = result.html.read_text()
    assert f"{len(rows)} variants are transplants" in page


def test_contact_sheet_shows_source_result_and_the_outline_beside_it(frames, tmp_path):
    """Each variant: source | result | the new polyp's outline on its own tile — the result tile is the result
    image itself (no outline drawn over the lesion), and a transplant's outline is shown."""
    from engine.dataset.contact_sheet import OUTLINE, TILE

    _job(frames, tmp_path / "out", harmonize="none")
    sheet = np.asarray(Image.open(tmp_path / "out" / "contact_sheet.jpg").convert("RGB")).astype(int)
    gap = 6
    source, result, outline = (sheet[gap:gap + TILE, gap + k * (TILE + gap):gap + k * (TILE + gap) + TILE]
                               for k in range(3))
    green = lambda tile: (np.abs(tile - np.array(OUTLINE)).sum(axis=2) < 90).sum()  # noqa: E731
    assert green(outline) > 20, "the outline tile shows the transplanted polyp's outline"
    assert green(result) < 5 and green(source) < 5, "nothing is drawn over the frames"
    assert np.abs(result - source).mean() > 0.5  # the result tile is the variant, not the source again
