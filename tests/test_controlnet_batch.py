"""The batch job with an sd-controlnet bundle: per-frame prompts from a captions file, recorded in the
manifest; the dataset is valid (pycocotools, YOLO) and pixels outside the region keep the frame's bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_batch_job import check_dataset

from engine.samples import generate_sample_set

CAPTION = "The polyp is pale pink, smooth, and slightly swollen, with normal mucosal folds."


@pytest.fixture(scope="module")
def controlnet_bundle(tmp_path_factory) -> Path:
    from engine.export.controlnet_export import export_controlnet_bundle
    from engine.export.random_controlnet import (
        build_random_ccis_controlnet,
        build_random_sd15_pipeline,
    )

    root = tmp_path_factory.mktemp("cn_batch")
    sd15 = build_random_sd15_pipeline(root / "sd15")
    ccis = build_random_ccis_controlnet(sd15, root / "ccis")
    return export_controlnet_bundle(sd15, ccis, root / "bundle", log=lambda _: None).bundle_dir


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cn_frames")
    generate_sample_set(root, count=4, seed=5, with_polyps_every=2, width=160, height=128)
    return root


def _spec(**values):
    from engine.jobs.spec import build_spec

    return build_spec({"steps": 2, **values})


def test_batch_job_with_captions_writes_a_valid_dataset(controlnet_bundle, frames, tmp_path):
    from engine.dataset.image_reader import read_frame
    from engine.jobs import run_job

    captions = tmp_path / "captions.csv"
    captions.write_text(f"frame,text\nsample_000.png,\"{CAPTION}\"\n", encoding="utf-8")
    output = tmp_path / "out"
    summary = run_job(_spec(input=frames, output=output, model=controlnet_bundle, captions=captions,
                            prompt="a polyp", variants=2, mask_source="user"))
    assert summary.status == "ok" and summary.ok == 4 and summary.skipped == 4  # frames 1, 3 have no mask
    check_dataset(output)
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    ok = [r for r in records if r["status"] == "ok"]
    by_frame = {Path(r["source_frame"]).stem: r for r in ok}
    assert by_frame["sample_000"]["prompt"] == CAPTION
    assert by_frame["sample_000"]["prompt_source"] == "captions"
    assert by_frame["sample_002"]["prompt"] == "a polyp"
    assert by_frame["sample_002"]["prompt_source"] == "job"
    assert all(r["bundle_kind"] == "sd-controlnet" and r["captions"] == str(captions) for r in ok)
    assert all(r["steps"] == 2 and r["scheduler"] == "ddim" and r["guidance"] == 7.0 for r in ok)
    # the generated frame is the source frame outside the region (paste-back), polygons for the pixel mask
    record = by_frame["sample_000"]
    generated = read_frame(output / record["image"])
    source = read_frame(frames / "images" / Path(record["source_frame"]).name)
    instance_map = read_frame(output / record["mask"])[..., 0] > 0
    far = ~_dilate(instance_map, 4)
    assert generated.shape == source.shape
    assert np.array_equal(generated[far], source[far]) and not np.array_equal(generated, source)
    assert all(i["label_shape"] != "box" for i in record["instances"] if "label_shape" in i)
    # a second run resumes (same settings incl. the captions' hash): nothing redone
    again = run_job(_spec(input=frames, output=output, model=controlnet_bundle, captions=captions,
                          prompt="a polyp", variants=2, mask_source="user"))
    assert again.reused == 8 and again.ok == 4


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    return out


def test_controlnet_jobs_that_cannot_start(controlnet_bundle, frames, tmp_path):
    from engine.jobs import JobCannotStart, run_job

    with pytest.raises(JobCannotStart, match="mode add"):
        run_job(_spec(input=frames, output=tmp_path / "a", model=controlnet_bundle, mode="remove"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"frame": "sample_000", "text": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(JobCannotStart, match=r"bad.jsonl:2: not valid JSON"):
        run_job(_spec(input=frames, output=tmp_path / "b", model=controlnet_bundle, captions=bad))


def test_read_captions_formats_and_errors(tmp_path):
    from engine.errors import InputError
    from engine.dataset.captions import caption_for, read_captions

    headerless = tmp_path / "c.csv"
    headerless.write_text('train/a.jpg,"pink, smooth"\nb,red polyp\n', encoding="utf-8")
    captions = read_captions(headerless)
    assert caption_for(captions, "train/a.jpg") == "pink, smooth"
    assert caption_for(captions, "val/b.png") == "red polyp"  # by stem
    assert caption_for(captions, "c.png") is None
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"stem": "a", "caption": "pale"}\n\n{"image": "d.PNG", "prompt": "flat"}\n', encoding="utf-8")
    assert read_captions(jsonl) == {"a": "pale", "d": "flat"}
    for name, text, message in [
        ("e.csv", "frame,text\na,\n", r"e.csv:2: no text"),
        ("f.csv", "a,one\na.png,two\n", r"f.csv:2: frame 'a.png' has two different captions"),
        ("g.jsonl", '["a", "b"]\n', r"g.jsonl:1: each line must be a JSON object"),
        ("h.txt", "", r"h.txt: holds no captions"),
        ("i.xlsx", "a,b", r"must be .csv, .tsv or .jsonl"),
    ]:
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=message):
            read_captions(tmp_path / name)
    with pytest.raises(InputError, match="not found"):
        read_captions(tmp_path / "missing.csv")


def test_batch_job_reads_the_caption_commands_output_unchanged(controlnet_bundle, frames, tmp_path):
    import main
    from engine.dataset.captions import read_captions
    from engine.jobs import run_job

    captions = tmp_path / "captions.csv"
    assert main.main(["caption", "--input", str(frames), "--out", str(captions), "--quiet"]) == 0
    texts = read_captions(captions)
    assert {"sample_000", "sample_002"} <= set(texts) and texts["sample_000"].startswith(("The polyp is", "2 polyps."))
    summary = run_job(_spec(input=frames, output=tmp_path / "out", model=controlnet_bundle, captions=captions,
                            mask_source="user"))
    assert summary.status == "ok" and summary.ok == 2
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    for record in (r for r in records if r["status"] == "ok"):
        assert record["prompt"] == texts[Path(record["source_frame"]).stem]
        assert record["prompt_source"] == "captions"
