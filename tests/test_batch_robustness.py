"""The batch job against what real folders hold: a malformed-input corpus with an expected outcome per item,
and a run killed with SIGKILL halfway, then resumed, compared with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import main
from conftest import REPO_ROOT
from engine.samples import generate_frame


def _mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(mask.astype(np.uint8) * 255)


def build_corpus(root: Path) -> dict[str, tuple[str, str]]:
    """Frames in images/, masks in masks/; returns {stem: (expected status, reason fragment)}."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    frame, (mask,) = generate_frame(seed=1, width=160, height=128, polyps=1)
    expected = {}

    def good(stem, image: Image.Image, fmt: str, suffix: str, mask_array=mask, status=("ok", "")):
        image.save(images / f"{stem}{suffix}", format=fmt)
        if mask_array is not None:
            _mask_image(mask_array).save(masks / f"{stem}.png")
        expected[stem] = status

    good("plain", Image.fromarray(frame), "PNG", ".png")
    good("upper case EXT ünï", Image.fromarray(frame), "JPEG", ".JPG")
    sixteen = (frame.mean(axis=2) * 257).astype(np.uint16)
    good("sixteen_bit", Image.fromarray(sixteen), "PNG", ".png")
    good("cmyk", Image.fromarray(frame).convert("CMYK"), "JPEG", ".jpg")
    good("rgba", Image.fromarray(frame).convert("RGBA"), "PNG", ".png")
    good("palette", Image.fromarray(frame).convert("P"), "PNG", ".png")
    good("gray", Image.fromarray(frame).convert("L"), "BMP", ".bmp")
    good("tiff", Image.fromarray(frame), "TIFF", ".tif")
    # EXIF orientation 6 (rotate 90° clockwise to view): stored 160×128, upright 128×160.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(frame).save(images / "exif_rotated.jpg", exif=exif.tobytes())
    _mask_image(np.rot90(mask, k=-1)).save(masks / "exif_rotated.png")
    expected["exif_rotated"] = ("ok", "")
    # Masks that are not clean: JPEG noise / grey levels, wrong size, empty, full.
    noisy = np.where(mask, 200, 40).astype(np.uint8) + np.random.default_rng(0).integers(0, 30, mask.shape, dtype=np.uint8)
    Image.fromarray(frame).save(images / "nonbinary_mask.png")
    Image.fromarray(noisy).save(masks / "nonbinary_mask.jpg", quality=70)
    expected["nonbinary_mask"] = ("ok", "")
    good("wrong_size_mask", Image.fromarray(frame), "PNG", ".png", mask_array=mask[:100, :100],
         status=("failed", "mask is 100×100 but the frame is 160×128"))
    good("empty_mask", Image.fromarray(frame), "PNG", ".png", mask_array=np.zeros_like(mask), status=("skipped", "empty"))
    good("full_mask", Image.fromarray(frame), "PNG", ".png", mask_array=np.ones_like(mask), status=("failed", "covers 100%"))
    # Files that are not usable frames.
    (images / "zero_bytes.jpg").write_bytes(b"")
    _mask_image(mask).save(masks / "zero_bytes.png")
    expected["zero_bytes"] = ("failed", "empty file")
    (images / "text.jpg").write_text("this is not a JPEG")
    _mask_image(mask).save(masks / "text.png")
    expected["text"] = ("failed", "not an image")
    Image.fromarray(frame).save(images / "truncated.jpg", format="JPEG", quality=95)
    data = (images / "truncated.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 3])
    _mask_image(mask).save(masks / "truncated.png")
    expected["truncated"] = ("failed", "damaged image data")
    Image.new("1", (20000, 20000)).save(images / "huge.png")
    expected["huge"] = ("failed", "400 MP) is over the 40 MP limit")
    _mask_image(mask).save(masks / "huge.png")
    return expected


def test_malformed_corpus_each_item_gets_its_outcome(tmp_path, capsys):
    expected = build_corpus(tmp_path / "in")
    output = tmp_path / "out"
    code = main.main(["--batch", "--quiet", "--input", str(tmp_path / "in"), "--output", str(output), "--steps", "2",
                      "--mask-source", "user"])  # at each frame's own mask: a bad mask is an item's failure
    assert code == 1  # finished, with failures
    records = {Path(r["source_frame"]).stem: r for r in map(json.loads, (output / "manifest.jsonl").read_text().splitlines())}
    assert set(records) == set(expected)
    for stem, (status, reason) in expected.items():
        record = records[stem]
        assert record["status"] == status, (stem, record.get("reason"))
        assert reason in record.get("reason", ""), (stem, record.get("reason"))
    rotated = records["exif_rotated"]
    assert (rotated["width"], rotated["height"]) == (128, 160)
    written = Image.open(output / rotated["image"])
    assert written.size == (128, 160) and not written.info.get("exif")
    err = capsys.readouterr().err
    assert "failed: truncated.jpg" in err and "Traceback" not in err


def _batch_command(input_dir: Path, output: Path) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "main.py"), "--batch", "--quiet", "--input", str(input_dir),
            "--output", str(output), "--mask-source", "random", "--variants", "3", "--steps", "8",
            "--no-judge"]  # a judged job's resume is byte-identical too (test_judge_rejection), at 2.5× the paintings


def _snapshot(output: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(output.rglob("*")):
        if path.is_file() and path.name not in ("summary.json",):
            # data.yaml names its own folder: compare it with that folder's name taken out
            files[path.relative_to(output).as_posix()] = path.read_bytes().replace(str(output).encode(), b"OUT")
    manifest = [json.loads(line) for line in files.pop("manifest.jsonl").decode().splitlines()]
    for record in manifest:
        record.pop("seconds", None)
    files["manifest.jsonl"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def test_killed_run_resumes_to_the_same_dataset(tmp_path):
    from engine.samples import generate_sample_set

    generate_sample_set(tmp_path / "in", count=4, seed=2)
    reference = tmp_path / "reference"
    subprocess.run(_batch_command(tmp_path / "in", reference), check=True, capture_output=True, timeout=600)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_batch_command(tmp_path / "in", interrupted), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = interrupted / "manifest.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if manifest.exists() and len(manifest.read_bytes().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    lines_at_kill = len(manifest.read_bytes().splitlines())
    assert 4 <= lines_at_kill < 12, "the kill must land mid-run"
    resumed = subprocess.run(_batch_command(tmp_path / "in", interrupted), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "from an earlier run" in resumed.stderr
    assert _snapshot(interrupted) == _snapshot(reference)
