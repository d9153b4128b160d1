"""Accept / reject after a job: the files on disk always match what was accepted."""

from __future__ import annotations

import json

import main
from engine.jobs.review import load_records, set_review
from engine.samples import generate_sample_set


def test_reject_removes_from_dataset_keeps_manifest_line_and_accept_restores(tmp_path):
    generate_sample_set(tmp_path / "in", count=2, seed=4)
    output = tmp_path / "out"
    args = ["--batch", "--quiet", "--no-judge", "--input", str(tmp_path / "in"), "--output", str(output), "--mask-source", "random",
            "--variants", "2", "--steps", "2"]
    assert main.main(args) == 0
    records = load_records(output)
    victim = records[1]
    set_review(output, [victim["key"]], accepted=False)
    assert not (output / victim["image"]).exists() and (output / "rejected" / victim["image"]).exists()
    coco = json.loads((output / "annotations" / "instances.json").read_text())
    assert len(coco["images"]) == 3 and victim["image"] not in {i["file_name"] for i in coco["images"]}
    assert len(list((output / "labels").rglob("*.txt"))) == 3
    assert len(list((output / "yolo-seg" / "images").rglob("*.png"))) == 3
    statuses = {r["key"]: r["status"] for r in load_records(output)}
    assert statuses[victim["key"]] == "rejected" and list(statuses.values()).count("ok") == 3

    assert main.main(args) == 0  # a resumed run does not bring the rejected variant back
    assert not (output / victim["image"]).exists()
    assert {r["key"]: r["status"] for r in load_records(output)}[victim["key"]] == "rejected"

    set_review(output, [victim["key"]], accepted=True)
    assert (output / victim["image"]).exists()
    assert len(json.loads((output / "annotations" / "instances.json").read_text())["images"]) == 4
