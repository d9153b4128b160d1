"""`main.py --batch` end to end on generated frames: the dataset it writes is read back by pycocotools and
checked the way Ultralytics reads YOLO labels; counts agree; labels of the source frames are carried."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from engine.samples import generate_sample_set


@pytest.fixture(scope="module")
def kvasir_like(tmp_path_factory) -> Path:
    """images/ + masks/ (one mask image may hold two polyps), frames without masks are normal frames."""
    root = tmp_path_factory.mktemp("kvasir_like")
    generate_sample_set(root, count=6, seed=3, with_polyps_every=2)
    return root


def run_batch(*args) -> int:
    return main.main(["--batch", "--quiet", "--no-judge", "--steps", "2", *map(str, args)])


def read_yolo_rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]


def check_dataset(output: Path) -> dict:
    """Everything a consumer relies on; returns the parsed COCO."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    manifest = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    ok = [r for r in manifest if r["status"] == "ok"]
    images = sorted(p.relative_to(output).as_posix() for p in (output / "images").rglob("*.png"))
    assert images == sorted(r["image"] for r in ok)
    coco = COCO(str(output / "annotations" / "instances.json"))
    assert len(coco.getImgIds()) == len(ok)
    for record in ok:
        assert (output / record["mask"]).is_file()
        for key in ("seed", "bundle_id", "source_frame", "source_sha256", "mask_source", "steps", "scheduler",
                    "guidance", "prompt", "engine_version", "seconds"):
            assert key in record, key
    annotations = coco.loadAnns(coco.getAnnIds())
    if annotations:
        for ann in annotations:
            assert ann["iscrowd"] == 0 and ann["area"] > 0 and len(ann["bbox"]) == 4
            assert all(len(poly) >= 6 for poly in ann["segmentation"])
        results = [dict(ann, score=1.0) for ann in annotations]
        for iou_type in ("bbox", "segm"):
            evaluation = COCOeval(coco, coco.loadRes(results), iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            assert evaluation.stats[0] == pytest.approx(1.0), iou_type
    labels = sorted(p for p in (output / "labels").rglob("*.txt"))
    assert len(labels) == len(ok)
    for path in labels:
        for row in read_yolo_rows(path):
            assert len(row) == 5 and row[0] == 0 and all(0.0 <= v <= 1.0 for v in row[1:]) and row[3] > 0 and row[4] > 0
    seg_labels = sorted((output / "yolo-seg" / "labels").rglob("*.txt"))
    assert len(seg_labels) == len(ok) == len(list((output / "yolo-seg" / "images").rglob("*.png")))
    for path in seg_labels:
        for row in read_yolo_rows(path):
            assert len(row) >= 7 and len(row) % 2 == 1 and all(0.0 <= v <= 1.0 for v in row[1:])
    yaml_text = (output / "data.yaml").read_text()
    for key in ("path:", "train:", "val:", "names:"):
        assert key in yaml_text
    assert (output / "contact_sheet.jpg").is_file()
    return {"coco": coco, "manifest": manifest}


def test_add_at_user_masks_writes_a_consistent_dataset(kvasir_like, tmp_path):
    output = tmp_path / "out"
    assert run_batch("--input", kvasir_like, "--output", output, "--variants", 2, "--mask-source", "user") == 0
    data = check_dataset(output)
    manifest = data["manifest"]
    with_masks = len(list((kvasir_like / "masks").glob("*.png")))
    assert sum(r["status"] == "ok" for r in manifest) == 2 * with_masks
    assert sum(r["status"] == "skipped" for r in manifest) == 2 * (6 - with_masks)  # normal frames: no mask
    for record in manifest:
        if record["status"] == "ok":
            assert record["instances"] and all(i["origin"] == "generated" and i["shape"] == "polygon" for i in record["instances"])
            frame = np.asarray(Image.open(kvasir_like / "images" / record["source_frame"]).convert("RGB"))
            result = np.asarray(Image.open(output / record["image"]))
            mask = np.asarray(Image.open(kvasir_like / "masks" / record["source_frame"])) > 127
            assert np.array_equal(result[~mask], frame[~mask])  # only the mask was touched


def test_random_masks_carry_the_frames_own_polyps(kvasir_like, tmp_path):
    output = tmp_path / "out"
    assert run_batch("--input", kvasir_like, "--output", output, "--mask-source", "random", "--seed", 5) == 0
    data = check_dataset(output)
    for record in data["manifest"]:
        assert record["status"] == "ok"
        origins = [i["origin"] for i in record["instances"]]
        assert origins.count("generated") == 1
        if record["mask_file"]:  # a polyp frame: its own polyps are in the variant's labels
            assert origins.count("mask") >= 1


def test_remove_at_boxes_drops_the_removed_polyps_labels(kvasir_like, tmp_path):
    output = tmp_path / "out"
    assert run_batch("--input", kvasir_like, "--output", output, "--mode", "remove", "--mask-source", "box") == 0
    data = check_dataset(output)
    ok = [r for r in data["manifest"] if r["status"] == "ok"]
    assert ok and all(r["instances"] == [] and r["removed"] for r in ok)
    assert all(r["prompt"] == "Normal" for r in ok)


def test_rerun_is_idempotent_and_fresh_starts_over(kvasir_like, tmp_path):
    output = tmp_path / "out"
    args = ("--input", kvasir_like, "--output", output, "--mask-source", "random")
    assert run_batch(*args) == 0
    first = {p: p.read_bytes() for p in output.rglob("*") if p.is_file() and p.name not in ("summary.json",)}
    assert run_batch(*args) == 0  # everything reused, annotation files rebuilt, not appended
    summary = json.loads((output / "summary.json").read_text())
    assert summary["reused"] == summary["planned"]
    second = {p: p.read_bytes() for p in output.rglob("*") if p.is_file() and p.name not in ("summary.json",)}
    assert first == second
    assert run_batch(*args, "--seed", 9) == 2  # other settings into the same folder: refused
    assert run_batch(*args, "--seed", 9, "--fresh") == 0


def test_splits_only_train_unless_asked(tmp_path):
    for split in ("train", "val"):
        generate_sample_set(tmp_path / "in" / "images" / split, count=2, seed=1 if split == "train" else 2,
                            with_polyps_every=0)
    # generate_sample_set writes images/ under its folder: flatten to images/<split>/*.png
    for split in ("train", "val"):
        nested = tmp_path / "in" / "images" / split / "images"
        for png in nested.glob("*.png"):
            png.rename(tmp_path / "in" / "images" / split / png.name)
        shutil.rmtree(nested)
    output = tmp_path / "out"
    assert run_batch("--input", tmp_path / "in", "--output", output, "--mask-source", "random") == 0
    manifest = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 2 and all(r["split"] == "train" and r["source_frame"].startswith("train/") for r in manifest)
    both = tmp_path / "out2"
    assert run_batch("--input", tmp_path / "in", "--output", both, "--mask-source", "random", "--from-splits", "train,val") == 0
    assert sorted(p.parent.name for p in (both / "images").rglob("*.png")) == ["train", "train", "val", "val"]
    assert "val: images/val" in (both / "data.yaml").read_text()


def test_job_file_with_flag_override_and_unknown_keys(kvasir_like, tmp_path, capsys):
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{kvasir_like}"\noutput = "out"\nmask-source = "random"\nvariants = 3\n')
    assert main.main(["--batch", "--quiet", "--no-judge", "--job", str(job), "--variants", "1", "--steps", "2"]) == 0
    manifest = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 6  # the flag (1 variant) beat the file (3)
    job.write_text(f'input = "{kvasir_like}"\noutput = "out"\nvariantz = 3\n')
    assert main.main(["--batch", "--job", str(job)]) == 2
    assert "unknown key(s) variantz" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--input", "{tmp}/missing", "--output", "{tmp}/o"], "input folder not found"),
        (["--input", "{data}", "--output", "{tmp}/file/o"], "not writable"),
        (["--input", "{data}", "--output", "{tmp}/o", "--model", "{tmp}"], "bundle.json: missing"),
        (["--input", "{data}", "--output", "{tmp}/o", "--mask-source", "retrieved"], "needs a retrieval database"),
        (["--input", "{data}", "--output", "{tmp}/o", "--mode", "remove", "--mask-source", "random"], "remove needs"),
        (["--input", "{data}", "--output", "{tmp}/o", "--variants", "0"], "variants must be"),
    ],
)
def test_jobs_that_cannot_start_say_why_in_one_line(kvasir_like, tmp_path, capsys, args, message):
    (tmp_path / "file").write_text("a file, not a folder")
    filled = [a.format(tmp=tmp_path, data=kvasir_like) for a in args]
    assert main.main(["--batch", "--quiet", "--no-judge", *filled]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and len(err.splitlines()) == 1


def test_job_api_cancel_then_resume(kvasir_like, tmp_path):
    from engine.jobs import build_spec, run_job

    spec = build_spec({"input": kvasir_like, "output": tmp_path / "out", "mask_source": "random", "steps": 2,
                       "variants": 2})
    events = []
    summary = run_job(spec, on_event=events.append, cancel=lambda: sum(e.kind == "variant" for e in events) >= 3)
    assert summary.status == "cancelled" and summary.ok == 3
    assert any(e.kind == "step" for e in events)
    assert len(json.loads((tmp_path / "out" / "annotations" / "instances.json").read_text())["images"]) == 3
    resumed = run_job(spec)
    assert resumed.status == "ok" and resumed.reused == 3 and resumed.ok == 12
    assert not any("paint over a real polyp" in note for note in resumed.notes)  # beside the real polyps
    over = run_job(build_spec({"input": kvasir_like, "output": tmp_path / "own", "steps": 2, "mask_source": "user"}))
    with_masks = len(list((kvasir_like / "masks").glob("*.png")))
    assert f"{with_masks} of {with_masks} variants paint over a real polyp" in "\n".join(over.notes)


def test_the_mask_source_default_follows_the_mode_and_an_old_own_mask_job_says_how_to_resume(kvasir_like, tmp_path):
    """Add paints new polyps at random masks unless asked (what the learning curve supports); remove and transplant
    work at the frames' own masks. A folder written when add's default was the own masks names the flag that
    resumes it."""
    from engine.jobs import JobCannotStart, build_spec, run_job

    paths = {"input": kvasir_like, "output": tmp_path / "o"}
    assert build_spec(paths).mask_source == "random"
    assert build_spec({**paths, "mode": "remove"}).mask_source == "user"
    assert build_spec({**paths, "mode": "transplant"}).mask_source == "user"
    assert build_spec({**paths, "mask_source": "user"}).mask_source == "user"
    old = {**paths, "steps": 2, "variants": 1}
    run_job(build_spec({**old, "mask_source": "user"}))
    with pytest.raises(JobCannotStart, match=r"mask_source.*--mask-source user resumes it as it was"):
        run_job(build_spec(old))
    assert run_job(build_spec({**old, "mask_source": "user"})).status == "ok"


def test_temp_files_of_killed_writers_are_swept_at_start_and_end(kvasir_like, tmp_path):
    """A writer killed between the temp file and its rename (a Ray worker SIGKILLed mid-PNG) leaves
    `.NAME.<random>.tmp` beside the target; the job removes such files when it ends and when it starts again."""
    from engine.jobs import build_spec, run_job

    output = tmp_path / "out"
    spec = build_spec({"input": kvasir_like, "output": output, "mask_source": "random", "steps": 2, "variants": 1})
    left_mid_run = output / "images" / "train" / ".sample_000__killed.png.abc123.tmp"

    def a_writer_dies(event):
        if event.kind == "variant" and not left_mid_run.exists():
            left_mid_run.write_bytes(b"half a png")

    summary = run_job(spec, on_event=a_writer_dies)
    assert summary.status == "ok" and summary.ok == 6
    assert not left_mid_run.exists() and not list(output.rglob("*.tmp"))
    assert any(note.startswith("1 half-written file(s)") for note in summary.notes)
    left_before = output / "annotations" / ".instances.json.x1y2.tmp"
    left_before.write_bytes(b"{")
    assert run_job(spec).reused == 6 and not left_before.exists()
    (output / "images" / "train" / "keep.tmp").write_bytes(b"not ours: no leading dot")
    run_job(spec)
    assert (output / "images" / "train" / "keep.tmp").exists()


def test_retrieved_masks_from_a_database(kvasir_like, tmp_path):
    db = tmp_path / "polyps.db"
    assert main.main(["db", "build", "--polyps", str(kvasir_like), "--to", str(db)]) == 0
    output = tmp_path / "out"
    normals = tmp_path / "normals"
    generate_sample_set(normals, count=3, seed=11, with_polyps_every=0)
    assert run_batch("--input", normals, "--output", output, "--mask-source", "retrieved", "--db", db,
                     "--variants", 2) == 0
    data = check_dataset(output)
    ok = [r for r in data["manifest"] if r["status"] == "ok"]
    assert ok, data["manifest"]
    for record in ok:
        retrieval = record["retrieval"]
        assert retrieval["db_id"] and retrieval["proposal"]["candidate"]["source"]
        generated = [i for i in record["instances"] if i["origin"] == "generated"]
        assert len(generated) == 1 and generated[0]["shape"] == "box"
        x, y, w, h = generated[0]["bbox"]
        assert 0 <= x and 0 <= y and x + w <= record["width"] and y + h <= record["height"]
