"""main.py as a curator meets it: --version/--help fast, export, inpaint, demo, clear errors."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
from PIL import Image

from cli_helpers import run_main_in_a_fresh_process
from conftest import REPO_ROOT


def _main(*args, timeout=300):
    return run_main_in_a_fresh_process(list(args), timeout=timeout)


def test_version_and_help_answer_before_heavy_imports():
    started = time.perf_counter()
    version = _main("--version")
    assert version.returncode == 0 and version.stdout.startswith("PolypForge ")
    help_text = _main("--help")
    assert help_text.returncode == 0 and "export" in help_text.stdout and "inpaint" in help_text.stdout
    assert time.perf_counter() - started < 10
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, main; main.build_parser(); print('onnxruntime' in sys.modules, 'numpy' in sys.modules)"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert probe.stdout.strip() == "False False"


def test_inpaint_command_writes_a_png(tmp_path):
    frame = np.full((100, 140, 3), 150, np.uint8)
    mask = np.zeros((100, 140), np.uint8)
    mask[30:70, 50:100] = 255
    Image.fromarray(frame).save(tmp_path / "frame.jpg")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out" / "result.png"
    completed = _main("inpaint", tmp_path / "frame.jpg", "--mask", tmp_path / "mask.png", "--out", out, "--steps", "3")
    assert completed.returncode == 0, completed.stderr
    result = np.asarray(Image.open(out))
    source = np.asarray(Image.open(tmp_path / "frame.jpg"))
    assert result.shape == (100, 140, 3)
    assert np.array_equal(result[mask == 0], source[mask == 0])


def test_errors_are_one_clear_line(tmp_path):
    (tmp_path / "bad.jpg").write_text("not an image")
    completed = _main("inpaint", tmp_path / "bad.jpg", "--mask", tmp_path / "bad.jpg", "--out", tmp_path / "o.png")
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: ") and "bad.jpg: not an image file" in completed.stderr
    assert "Traceback" not in completed.stderr
    missing_model = _main("inpaint", tmp_path / "bad.jpg", "--mask", tmp_path / "bad.jpg", "--out", tmp_path / "o.png",
                          "--model", tmp_path / "nowhere")
    assert missing_model.returncode == 2 and "Traceback" not in missing_model.stderr


def test_demo_command_runs_the_batch_job(tmp_path):
    """make demo: an add job and a removal job on generated frames, and one contact sheet showing both."""
    completed = _main("demo", "--samples", tmp_path / "samples", "--output", tmp_path / "out", "--variants", "1")
    assert completed.returncode == 0, completed.stderr
    add = tmp_path / "out" / "add"
    images = sorted((add / "images" / "train").glob("*.png"))
    lines = (add / "manifest.jsonl").read_text().splitlines()
    rejected = sorted((add / "rejected" / "images" / "train").glob("*.png"))
    assert len(images) + len(rejected) == len(lines) == 6 and images  # the model's judge kept some, moved the rest
    assert all("__add-random-v00" in p.name for p in images)
    assert (add / "annotations" / "instances.json").is_file()
    assert "polypforge-compact" in completed.stderr and "research use only" in completed.stderr
    assert "dataset: " in completed.stderr
    records = [__import__("json").loads(line) for line in lines]
    assert {r["bundle"] for r in records} == {"polypforge-compact"} and {r["inpaint_area"] for r in records} == {"region"}
    assert {r["judge"]["bundle"] for r in records} == {"polyp-judge"} and {r["judge"]["max_attempts"] for r in records} == {4}
    assert "recommended judge polyp-judge" in completed.stderr
    assert all(r["size_source"] == "kvasir-seg prior" for r in records if r["status"] == "ok"), records[0]
    removal = tmp_path / "out" / "removal"
    removed = [__import__("json").loads(line) for line in (removal / "manifest.jsonl").read_text().splitlines()]
    done = [r for r in removed if r["status"] == "ok"]
    masks = list((tmp_path / "samples" / "masks").glob("*.png"))
    assert masks and len(done) == len(masks)  # one removal per annotated frame; the polyp-free ones are skipped
    assert all(r["prompt"] == "Normal" and r["removed"] and not r["instances"] for r in done)
    from PIL import Image

    sheet = Image.open(tmp_path / "out" / "contact_sheet.jpg")
    assert sheet.height > 2 * 192  # rows of both jobs (3 added + 3 removed, two per row at least 3 rows)
    assert "contact sheet" in completed.stderr


def test_every_job_spec_field_is_a_batch_flag():
    """--batch passes the JobSpec fields on by name (main.batch_flag_values): a field without a flag of the
    same dest could never be set from the command line."""
    from dataclasses import fields

    import main
    from engine.jobs import JobSpec

    dests = {action.dest for action in main.build_parser()._actions}
    assert {spec_field.name for spec_field in fields(JobSpec)} <= dests
    args = main.build_parser().parse_args(["--batch", "--top-k", "3", "--fresh", "--from-splits", "train,val"])
    assert main.batch_flag_values(args) == {"from_splits": "train,val", "top_k": 3, "resume": False}
