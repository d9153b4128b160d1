"""Poisson blending of a generated region (engine.pipelines.blending) and its use by the pipelines and the batch job:
the generated region's colour offset goes, its texture stays, the seam at the mask's edge goes, no pixel outside
the mask changes; removals default to it and the manifest says which blend made a variant."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import main
from engine.pipelines.blending import poisson_blend
from engine.pipelines.framing import blend_for_prompt, paste_back
from engine.samples import generate_sample_set


def _mucosa(height=240, width=300, seed=0) -> np.ndarray:
    """A smooth shaded frame with a little noise (no two pixels alike, like a real frame)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([150 + 40 * np.sin(xx / 37.0), 90 + 25 * np.cos(yy / 29.0), 70 + 10 * np.sin((xx + yy) / 50.0)], -1)
    return np.clip(base + rng.normal(0, 2.0, base.shape), 0, 255).astype(np.uint8)


def _box(height, width, top, left, bottom, right) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[top:bottom, left:right] = True
    return mask


@pytest.mark.parametrize("max_unknowns", [10**9, 2000], ids=["exact", "coarse"])
def test_colour_offset_goes_texture_stays_outside_untouched(max_unknowns):
    frame = _mucosa()
    mask = _box(*frame.shape[:2], 60, 80, 180, 230)
    yy, xx = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
    texture = 12.0 * np.sign(np.sin(xx / 3.0) * np.sin(yy / 3.0))  # fine folds the model painted
    generated = np.clip(frame.astype(float) - 35.0 + texture[..., None], 0, 255).astype(np.uint8)  # 35 levels too dark

    out = poisson_blend(frame, generated, mask, max_unknowns=max_unknowns)

    assert np.array_equal(out[~mask], frame[~mask])
    change = out.astype(float) - frame.astype(float)
    inner = _box(*mask.shape, 70, 90, 170, 220)
    assert abs(change[inner].mean()) < 3.0  # the 35-level offset is gone (feathering would keep it)
    correlation = np.corrcoef(change[inner][:, 0], np.broadcast_to(texture[..., None], change.shape)[inner][:, 0])[0, 1]
    assert correlation > 0.9  # the painted texture is kept


def test_coarse_solve_agrees_with_the_exact_one_inside():
    frame = _mucosa(seed=1)
    mask = _box(*frame.shape[:2], 40, 50, 200, 260)
    generated = np.clip(frame.astype(float) * 0.8 + 20 + _mucosa(seed=2).astype(float) * 0.1, 0, 255).astype(np.uint8)
    exact = poisson_blend(frame, generated, mask).astype(float)
    coarse = poisson_blend(frame, generated, mask, max_unknowns=3000).astype(float)
    assert np.abs(exact - coarse)[mask].mean() < 2.0


def test_the_seam_goes():
    """Across the mask's edge, Poisson blending leaves a jump no larger than the frame's own; feathering keeps it."""
    frame = _mucosa(seed=3)
    mask = _box(*frame.shape[:2], 50, 60, 190, 240)
    generated = np.clip(frame.astype(float) + 40.0, 0, 255).astype(np.uint8)
    feathered = paste_back(frame, generated.astype(np.float32) / 255.0, mask, feather_px=4)
    blended = paste_back(frame, generated.astype(np.float32) / 255.0, mask, feather_px=4, blend="poisson")

    def jump(image):  # mean |step| between the column just inside the left edge and the one just outside
        return float(np.abs(image[50:190, 60].astype(float) - image[50:190, 59].astype(float)).mean())

    assert jump(blended) <= jump(frame) + 2.0
    assert jump(feathered) > jump(frame) + 5.0
    for image in (feathered, blended):
        assert np.array_equal(image[~mask], frame[~mask])


def test_whole_image_mask_and_empty_mask():
    frame = _mucosa(40, 50)
    generated = _mucosa(40, 50, seed=9)
    assert np.abs(poisson_blend(frame, generated, np.ones((40, 50), bool)).astype(int) - generated).max() <= 1
    assert np.array_equal(poisson_blend(frame, generated, np.zeros((40, 50), bool)), frame)
    with pytest.raises(ValueError, match="must agree"):
        poisson_blend(frame, generated[:-1], np.ones((40, 50), bool))


def test_removal_prompt_defaults_to_poisson_with_the_mucosa_detail():
    assert blend_for_prompt("Normal", "Normal") == "mucosa"
    assert blend_for_prompt(" normal ", "Normal") == "mucosa"
    assert blend_for_prompt("Polyp", "Normal") == "feather"
    assert blend_for_prompt("Normal", None) == "feather"


def test_the_command_line_offers_the_engines_blends():
    from engine.pipelines.blending import BLEND_MODES

    assert main.BLEND_MODES == BLEND_MODES


def test_batch_job_removes_with_poisson_by_default_and_records_the_blend(tmp_path):
    data = tmp_path / "data"
    generate_sample_set(data, count=2, seed=5, with_polyps_every=1)
    runs = {}
    for name, extra in (("default", []), ("feather", ["--blend", "feather"])):
        out = tmp_path / name
        assert main.main(["--batch", "--quiet", "--steps", "2", "--input", str(data), "--output", str(out),
                          "--mode", "remove", "--mask-source", "box", *extra]) == 0
        records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        runs[name] = [r for r in records if r["status"] == "ok"]
        assert runs[name]
    assert {r["blend"] for r in runs["default"]} == {"mucosa"}
    assert {r["blend"] for r in runs["feather"]} == {"feather"}
    for a, b in zip(runs["default"], runs["feather"]):
        one = np.asarray(Image.open(tmp_path / "default" / a["image"]))
        two = np.asarray(Image.open(tmp_path / "feather" / b["image"]))
        source = np.asarray(Image.open(data / "images" / a["source_frame"]).convert("RGB"))
        outside = np.ones(source.shape[:2], bool)
        for removed in a["removed"]:  # the polyps' boxes padded by the job's 15 px
            x, y, w, h = removed["bbox"]
            outside[max(0, int(y) - 16):int(y + h) + 16, max(0, int(x) - 16):int(x + w) + 16] = False
        assert np.array_equal(one[outside], source[outside]) and np.array_equal(two[outside], source[outside])
        assert not np.array_equal(one, two)


@pytest.mark.parametrize("max_unknowns", [10**9, 2000], ids=["exact", "coarse"])
def test_a_polyp_at_the_frame_edge_and_a_highlight_on_the_boundary_do_not_leak_in(max_unknowns):
    """The mask runs to the frame's bottom edge over a bright polyp, and a specular highlight sits on its top edge:
    the blended region continues the mucosa (the frame's edge is free, the highlight is clamped)."""
    mucosa = _mucosa(seed=4)
    frame = mucosa.copy()
    frame[150:, 100:200] = (235, 220, 200)  # the polyp being removed, down to the frame's edge
    frame[118:121, 130:170] = 255  # a highlight on the mask's top edge
    mask = _box(*frame.shape[:2], 120, 90, frame.shape[0], 210)
    generated = np.clip(mucosa.astype(float) - 30.0, 0, 255).astype(np.uint8)
    out = poisson_blend(frame, generated, mask, max_unknowns=max_unknowns).astype(float)
    error = np.abs(out - mucosa.astype(float))[mask]
    assert error.mean() < 8.0 and np.percentile(error, 99) < 30.0
