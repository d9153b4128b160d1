"""Existing labels and splits as curators' folders hold them: Ultralytics (YOLO det + seg), COCO, split
files, and a malformed label file failing only its own frame."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

import main
from engine.dataset.discovery import discover
from engine.masks.instances import bbox_of, mask_polygons
from engine.samples import generate_frame


def _frames(folder: Path, count: int, polyps: int = 1, start: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for index in range(start, start + count):
        frame, masks = generate_frame(seed=index, width=192, height=160, polyps=polyps)
        path = folder / f"frame_{index:02d}.png"
        Image.fromarray(frame).save(path)
        made.append((path, masks))
    return made


def _manifest(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]


def test_ultralytics_layout_with_detect_and_segment_rows(tmp_path):
    root = tmp_path / "yolo"
    made = _frames(root / "images" / "train", 2, polyps=2)
    (root / "labels" / "train").mkdir(parents=True)
    for index, (path, masks) in enumerate(made):
        rows = []
        for mask in masks:
            if index == 0:  # detect rows
                x, y, w, h = bbox_of(mask)
                rows.append(f"0 {(x + w / 2) / 192:.6f} {(y + h / 2) / 160:.6f} {w / 192:.6f} {h / 160:.6f}")
            else:  # segment rows
                poly = mask_polygons(mask)[0]
                rows.append("0 " + " ".join(f"{v / (192 if i % 2 == 0 else 160):.6f}" for i, v in enumerate(poly)))
        (root / "labels" / "train" / f"{path.stem}.txt").write_text("\n".join(rows) + "\n")
    output = tmp_path / "out"
    assert main.main(["--batch", "--quiet", "--no-judge", "--input", str(root), "--output", str(output), "--mode", "remove",
                      "--mask-source", "box", "--steps", "2"]) == 0
    records = {r["source_frame"]: r for r in _manifest(output)}
    assert all(r["status"] == "ok" and len(r["removed"]) == 2 and r["instances"] == [] for r in records.values())
    assert {i["shape"] for i in records["train/frame_00.png"]["removed"]} == {"box"}
    assert {i["shape"] for i in records["train/frame_01.png"]["removed"]} == {"polygon"}
    assert all(r["label_source"].startswith("yolo:labels/train/") for r in records.values())
    # add at random places: the YOLO polyps are carried into the variant's labels
    output2 = tmp_path / "out2"
    assert main.main(["--batch", "--quiet", "--no-judge", "--input", str(root), "--output", str(output2), "--mask-source", "random",
                      "--steps", "2"]) == 0
    for record in _manifest(output2):
        origins = sorted(i["origin"] for i in record["instances"])
        assert origins == ["generated", "yolo", "yolo"]


def test_coco_labels_are_read_and_carried(tmp_path):
    root = tmp_path / "coco"
    made = _frames(root, 2)
    images, annotations = [], []
    for image_id, (path, masks) in enumerate(made, start=1):
        images.append({"id": image_id, "file_name": path.name, "width": 192, "height": 160})
        for mask in masks:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": list(bbox_of(mask)), "area": float(mask.sum()), "iscrowd": 0,
                                "segmentation": [list(p) for p in mask_polygons(mask)]})
    (root / "labels.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                  "categories": [{"id": 1, "name": "polyp"}]}))
    sources = discover(root)
    assert all(f.label_source == "coco:labels.json" and len(f.label_instances) == 1 for f in sources.frames)
    output = tmp_path / "out"
    assert main.main(["--batch", "--quiet", "--no-judge", "--input", str(root), "--output", str(output), "--mask-source", "random",
                      "--steps", "2"]) == 0
    for record in _manifest(output):
        carried = [i for i in record["instances"] if i["origin"] == "coco"]
        assert len(carried) == 1 and carried[0]["shape"] == "polygon"


def test_split_file_decides_and_unlisted_frames_are_left_out(tmp_path, capsys):
    root = tmp_path / "frames"
    _frames(root, 4, polyps=0)
    split_file = tmp_path / "splits.csv"
    split_file.write_text("# frame,split\nframe_00.png,train\nframe_01,train\nframe_02.png,val\n")
    output = tmp_path / "out"
    assert main.main(["--batch", "--quiet", "--no-judge", "--input", str(root), "--output", str(output), "--mask-source", "random",
                      "--split-file", str(split_file), "--steps", "2"]) == 0
    assert sorted(r["source_frame"] for r in _manifest(output)) == ["frame_00.png", "frame_01.png"]
    err = capsys.readouterr().err
    assert "1 frames are not in the split file" in err and "1 frames of splits other than train" in err
    split_file.write_text("frame_00.png,holdout\n")
    assert main.main(["--batch", "--input", str(root), "--output", str(tmp_path / "o2"), "--split-file", str(split_file)]) == 2
    assert "splits.csv:1: unknown split 'holdout'" in capsys.readouterr().err


def test_a_malformed_label_file_fails_only_its_frame(tmp_path):
    root = tmp_path / "yolo"
    made = _frames(root / "images", 2)
    (root / "labels").mkdir()
    (root / "labels" / "frame_00.txt").write_text("0 0.5 0.5 0.2\n")  # 4 values: not a YOLO row
    (root / "labels" / "frame_01.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    output = tmp_path / "out"
    assert main.main(["--batch", "--quiet", "--no-judge", "--input", str(root), "--output", str(output), "--mask-source", "box",
                      "--steps", "2"]) == 1
    records = {r["source_frame"]: r for r in _manifest(output)}
    assert records["frame_00.png"]["status"] == "failed"
    assert "frame_00.txt:1: expected 'cls cx cy w h'" in records["frame_00.png"]["reason"]
    assert records["frame_01.png"]["status"] == "ok"
    assert len(made) == 2
