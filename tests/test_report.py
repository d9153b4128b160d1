"""The quality report end to end: a real PolypForge output (demo bundle, random mask source) against its
generated source frames → report.html (self-contained), report.json, tsne.png; the CLI's exit codes and
one-line errors; a synthetic frame that copies a real one is flagged."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import main as app
from engine.cli.report import EXIT_FLAGGED
from engine.metrics.report import run_report
from engine.samples import generate_sample_set


@pytest.fixture(scope="module")
def job_output(tmp_path_factory):
    from engine.jobs.runner import run_job
    from engine.jobs.spec import JobSpec

    root = tmp_path_factory.mktemp("report")
    generate_sample_set(root / "real", count=12, seed=11, width=192, height=160, with_polyps_every=0)
    spec = JobSpec(input=root / "real", output=root / "synthetic", mask_source="random", variants=2, steps=2,
                   provider="cpu", threads=1).validate()
    summary = run_job(spec)
    assert summary.ok == 24
    return root


def test_report_on_a_polypforge_output(job_output, tmp_path):
    seen = []
    result = run_report(job_output / "real", job_output / "synthetic", tmp_path / "report", batch_size=5,
                        progress=lambda stage, done, total: seen.append((stage, done, total)))
    data = json.loads(result.json.read_text())
    assert data["overall"]["n_real"] == 12 and data["overall"]["n_synthetic"] == 24
    assert data["overall"]["fd"] > 0 and data["overall"]["kid"]["subset_size"] == 12
    assert data["features"]["random_weights"] is True
    assert any("RANDOM weights" in w for w in data["warnings"])
    assert any("only 12 real" in w for w in data["warnings"])
    # every variant's own source frame is in the real folder: excluded from its search, distance reported
    mem = data["memorisation"]
    assert mem["own_source_excluded"] == 24
    for row in mem["per_image"]:
        stem = row["synthetic"].split("/")[-1].split("__")[0]
        assert row["own_source"].endswith(stem + ".png")
        assert row["nearest_real"] != row["own_source"]
        assert row["flagged"] == (row["distance"] < mem["threshold"])
    assert mem["flagged"] == sum(r["flagged"] for r in mem["per_image"])
    by = {(b["by"], b["value"].split(" ")[0]) for b in data["breakdown"]}
    assert {("mask_source", "random"), ("mode", "add"), ("bundle", "polypforge-compact")} <= by
    assert len(data["tsne"]["real"]) == 12 and len(data["tsne"]["synthetic"]) == 24
    # progress: per-batch feature counts reach the totals
    assert ("real features", 12, 12) in seen and ("synthetic features", 24, 24) in seen
    assert ("real features", 5, 12) in seen
    # HTML: self-contained (every image a data URI, no external references)
    page = result.html.read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 1 + 12 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(src|href)=['\"](?!data:)", page)
    with Image.open(tmp_path / "report" / "tsne.png") as image:
        assert image.size[0] >= 600
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert (np.abs(pixels - (214, 96, 77)).sum(1) < 10).any()  # synthetic points drawn
    assert (np.abs(pixels - (33, 102, 172)).sum(1) < 10).any()  # real points drawn
    assert not list((tmp_path / "report").glob(".*tmp"))  # atomic writes leave no temp files


def test_a_copied_real_frame_is_flagged_and_the_cli_says_so(job_output, tmp_path, capsys):
    synthetic = tmp_path / "plain"
    synthetic.mkdir()
    frames = sorted((job_output / "synthetic" / "images" / "train").glob("*.png"))
    for frame in frames[:10]:
        shutil.copy(frame, synthetic / frame.name)
    copied = sorted((job_output / "real" / "images").glob("*.png"))[3]
    shutil.copy(copied, synthetic / "zz_copy.png")  # a "generated" frame that is a patient's frame
    code = app.main(["report", "--real", str(job_output / "real"), "--synthetic", str(synthetic),
                     "--out", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = {r["synthetic"]: r for r in data["memorisation"]["per_image"]}
    assert rows["zz_copy.png"]["flagged"] and rows["zz_copy.png"]["distance"] < 1e-6
    assert rows["zz_copy.png"]["nearest_real"] == f"images/{copied.name}"
    assert data["synthetic"]["polypforge_output"] is False and data["breakdown"] == []
    assert code == EXIT_FLAGGED and "flagged" in out and "FD" in out
    page = (tmp_path / "out" / "report.html").read_text()
    assert f"{data['memorisation']['flagged']} of 11 flagged" in page


def test_cli_errors_are_one_line_naming_the_folder(tmp_path, capsys):
    code = app.main(["report", "--real", str(tmp_path / "nope"), "--synthetic", str(tmp_path),
                     "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {tmp_path / 'nope'}: no such folder"]
    generate_sample_set(tmp_path / "a", count=3, seed=1, width=64, height=64)
    code = app.main(["report", "--real", str(tmp_path / "a"), "--synthetic", str(tmp_path / "a"),
                     "--out", str(tmp_path / "o"), "--features", "inception", "--quiet"])
    assert code == 2 and "local Inception bundle" in capsys.readouterr().err
