"""The engine on real Kvasir-SEG frames (../shared/data, skipped when absent): native sizes, noisy JPEG
masks, paste-back exactness, removal at the padded box as Polyp-Gen samples it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, shared_data_or_skip
from engine.dataset.image_reader import read_frame, read_mask
from engine.masks.instances import bbox_of, padded_box_mask
from engine.pipelines.inpaint import InpaintPipeline


@pytest.fixture(scope="module")
def demo_pipeline():
    return InpaintPipeline.from_bundle(REPO_ROOT / "exported_models" / "demo-sd-inpaint", provider="cpu")


def _real_pairs(count: int):
    root = shared_data_or_skip() / "polyps"
    images = sorted((root / "images").glob("*.jpg"))
    # Spread over the set: small and large polyps, different resolutions.
    picked = images[:: max(1, len(images) // count)][:count]
    return [(path, root / "masks" / path.name) for path in picked]


def test_compact_model_on_real_frames_changes_only_the_region(tmp_path):
    """The default model (region inpainting) on real frames at native size: remove at the padded box, add at a
    polygon; every pixel outside the region keeps its byte and the crop holds the whole region."""
    from engine.jobs.spec import DEFAULT_MODEL
    from engine.pipelines import open_pipeline

    pipeline = open_pipeline(DEFAULT_MODEL, provider="cpu", purpose="inpaint")
    for image_path, mask_path in _real_pairs(3):
        frame = read_frame(image_path)
        mask = read_mask(mask_path)
        region = padded_box_mask(bbox_of(mask), 15, *mask.shape)
        for prompt in ("Normal", "Polyp"):
            result = pipeline(frame, region, prompt=prompt, steps=4, seed=1)
            assert np.array_equal(result.image[~region], frame[~region]), image_path.name
            assert (result.image[region] != frame[region]).any()
            x0, y0, x1, y1 = result.settings["region_crop"]
            ys, xs = np.nonzero(region)
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
            assert result.settings["inpaint_area"] == "region"


def test_real_frames_keep_every_pixel_outside_the_mask(demo_pipeline):
    for image_path, mask_path in _real_pairs(3):
        frame = read_frame(image_path)
        raw_mask = np.asarray(Image.open(mask_path))
        assert raw_mask.ndim == 3 and len(np.unique(raw_mask)) > 2  # really a noisy 3-channel JPEG mask
        mask = read_mask(mask_path)
        assert mask.shape == frame.shape[:2] and 0.01 < mask.mean() < 0.8
        region = padded_box_mask(bbox_of(mask), 15, *mask.shape)
        result = demo_pipeline(frame, region, prompt="Normal", steps=3, seed=0)
        assert result.image.shape == frame.shape
        assert np.array_equal(result.image[~region], frame[~region]), image_path.name
        assert (result.image[region] != frame[region]).any()
        work_w, work_h = result.settings["working_size"]
        assert work_w % demo_pipeline.size_multiple == 0 and work_h % demo_pipeline.size_multiple == 0
        assert abs(np.log((work_w / work_h) / (frame.shape[1] / frame.shape[0]))) < 0.15


def _kvasir_subset(tmp_path, count: int):
    """A Kvasir-SEG layout (images/, masks/, kavsir_bboxes.json) of `count` real frames, multi-polyp ones first."""
    import csv
    import json
    import os

    root = shared_data_or_skip() / "polyps"
    with open(root / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    polyps_per_frame = {Path(row["image"]).name: int(row["n_bboxes"]) for row in rows}
    names = sorted(polyps_per_frame, key=lambda name: (-polyps_per_frame[name], name))
    picked = names[:count]
    subset = tmp_path / "kvasir"
    for folder in ("images", "masks"):
        (subset / folder).mkdir(parents=True)
        for name in picked:
            os.symlink(root / folder / name, subset / folder / name)
    boxes = json.loads((root / "kavsir_bboxes.json").read_text())
    (subset / "kavsir_bboxes.json").write_text(json.dumps({Path(n).stem: boxes[Path(n).stem] for n in picked}))
    return subset, picked


def test_batch_job_on_real_kvasir_frames(tmp_path):
    from test_batch_job import check_dataset

    import main

    subset, picked = _kvasir_subset(tmp_path, 4)
    output = tmp_path / "out"
    code = main.main(["--batch", "--quiet", "--no-judge", "--input", str(subset), "--output", str(output), "--mode", "remove",
                      "--mask-source", "box", "--steps", "2"])
    assert code == 0
    data = check_dataset(output)
    ok = [r for r in data["manifest"] if r["status"] == "ok"]
    assert len(ok) == len(picked)
    for record in ok:
        mask = read_mask(subset / "masks" / record["source_frame"])
        from engine.masks.instances import split_instances

        assert len(record["removed"]) == len(split_instances(mask))  # every polyp in the frame was removed
        assert record["instances"] == []
        assert record["width"] == Image.open(subset / "images" / record["source_frame"]).width


def test_add_at_real_masks_labels_follow_the_mask(tmp_path):
    from test_batch_job import check_dataset

    import main

    subset, picked = _kvasir_subset(tmp_path, 2)
    output = tmp_path / "out"
    assert main.main(["--batch", "--quiet", "--no-judge", "--input", str(subset), "--output", str(output), "--steps", "2",
                      "--mask-source", "user"]) == 0
    data = check_dataset(output)
    coco = data["coco"]
    for image in coco.loadImgs(coco.getImgIds()):
        mask = read_mask(subset / "masks" / Path(image["source_frame"]).name)
        painted = np.zeros_like(mask)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]])):
            painted |= coco.annToMask(ann).astype(bool)
        iou = (painted & mask).sum() / (painted | mask).sum()
        assert iou > 0.9, iou  # the polygons written are the mask's outline
