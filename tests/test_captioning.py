"""The measured captioner: every attribute changes, as its word says, when the pixels change that way, on
constructed frames; captions are deterministic; `main.py caption` writes a file the batch job and the
reader take unchanged, resumes after a kill, keeps curators' edits, names bad files; no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from engine.captioning.captioner import NoPolyp, caption_frame
from engine.dataset.captions import caption_for, read_caption_table, read_captions

W, H = 320, 256
MUCOSA = (190, 100, 85)
BORDER = 8


def mucosa(seed: int = 0, colour=MUCOSA) -> np.ndarray:
    """A lit mucosa wall (brighter in the middle, sensor noise) inside a black endoscope border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    light = 0.9 + 0.15 * (1 - ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / ((W / 2) ** 2 + (H / 2) ** 2))
    image = np.asarray(colour, np.float64)[None, None] * light[..., None] + rng.normal(0, 1.5, (H, W, 3))
    image[:BORDER], image[-BORDER:], image[:, :BORDER], image[:, -BORDER:] = 0, 0, 0, 0
    return image


def ellipse(cx, cy, rx, ry) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def paint_lesion(image, mask, colour, dome=True, texture=0.0, seed=1) -> np.ndarray:
    """A lesion of `colour` in `mask`: dome-shaded (lit on top, darker at its foot) or flat, optionally with
    a fine pit texture of ±`texture` levels."""
    yy, xx = np.nonzero(mask)
    cy, cx = yy.mean(), xx.mean()
    ry, rx = max(1.0, np.ptp(yy) / 2), max(1.0, np.ptp(xx) / 2)
    grid_y, grid_x = np.mgrid[0:H, 0:W]
    r2 = np.clip(((grid_x - cx) / rx) ** 2 + ((grid_y - cy) / ry) ** 2, 0, 1)
    shade = 0.72 + 0.4 * (1 - r2) if dome else np.ones((H, W))
    pixels = np.asarray(colour, np.float64)[None, None] * shade[..., None]
    if texture:
        pixels = pixels + texture * np.random.default_rng(seed).choice([-1.0, 1.0], (H, W))[..., None]
    image[mask] = pixels[mask]
    return mask


def done(image) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def frame_with(colour=MUCOSA, mask=None, **lesion) -> tuple[np.ndarray, np.ndarray]:
    image = mucosa()
    mask = ellipse(160, 128, 45, 40) if mask is None else mask
    paint_lesion(image, mask, colour, **lesion)
    return image, mask


def attributes_of(image, mask) -> dict:
    return caption_frame(done(image), mask).attributes


# ---------------------------------------------------------------------------------------------- attributes
@pytest.mark.parametrize("colour, expected", [
    (MUCOSA, "pink"), ((200, 55, 60), "red"), ((215, 160, 145), "pale"), ((205, 200, 196), "whitish"),
])
def test_colour_follows_the_lesion_against_the_mucosa(colour, expected):
    attributes = attributes_of(*frame_with(colour))
    assert attributes["colour"] == expected
    caption = caption_frame(done(frame_with(colour)[0]), frame_with(colour)[1]).text
    assert caption.startswith(f"The polyp is {expected}, ")


def test_colour_is_relative_to_the_surrounding_mucosa():
    """The same lesion reads red on pale mucosa and pale on red mucosa."""
    lesion = (200, 95, 85)
    on_pale = mucosa(colour=(205, 165, 150))
    mask = paint_lesion(on_pale, ellipse(160, 128, 45, 40), lesion)
    on_red = mucosa(colour=(200, 50, 55))
    paint_lesion(on_red, mask, lesion)
    assert attributes_of(on_pale, mask)["colour"] == "red"
    assert attributes_of(on_red, mask)["colour"] == "pale"


@pytest.mark.parametrize("radius, expected", [(10, "diminutive"), (30, "small"), (70, "large")])
def test_size_follows_the_mask_area_in_the_view(radius, expected):
    image, mask = frame_with(mask=ellipse(160, 128, radius, radius))
    attributes = attributes_of(image, mask)
    assert attributes["size"] == expected
    assert attributes["measures"]["area_fraction"] == pytest.approx(np.pi * radius ** 2 / ((W - 2 * BORDER) * (H - 2 * BORDER)), rel=0.1)


def star(cx, cy, outer, inner, points=7) -> np.ndarray:
    import cv2

    angles = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False)
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    polygon = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1).round().astype(np.int32)
    canvas = np.zeros((H, W), np.uint8)
    cv2.fillPoly(canvas, [polygon], 1)
    return canvas.astype(bool)


@pytest.mark.parametrize("mask, expected", [
    (ellipse(160, 128, 45, 43), "round"), (ellipse(160, 128, 70, 30), "oval"), (star(160, 128, 70, 35), "irregular"),
])
def test_outline_follows_the_mask_shape(mask, expected):
    assert attributes_of(*frame_with(mask=mask))["outline"] == expected


def test_outline_cut_by_the_edge_of_the_view_is_not_irregular_and_says_so():
    mask = ellipse(BORDER + 10, 128, 50, 50) & ellipse(160, 128, 400, 400)
    mask[:, :BORDER] = False  # the border hides the rest of the polyp
    caption = caption_frame(done(frame_with(mask=mask)[0]), mask)
    assert caption.attributes["outline"] != "irregular"
    assert caption.attributes["partly_out_of_view"] is True and "partly out of view" in caption.text
    assert attributes_of(*frame_with())["partly_out_of_view"] is False


def clover(cx=160, cy=128, radius=30, offset=30) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    for angle in (90, 210, 330):
        mask |= ellipse(cx + offset * np.cos(np.radians(angle)), cy - offset * np.sin(np.radians(angle)), radius, radius)
    return mask


def test_surface_smooth_irregular_lobulated():
    assert attributes_of(*frame_with())["surface"] == "smooth"
    assert attributes_of(*frame_with(texture=14))["surface"] == "irregular"  # fine pit texture
    image = mucosa()
    lobes = clover()
    for angle in (90, 210, 330):  # three domes, each lit on its own: lobes with creases between them
        lobe = ellipse(160 + 30 * np.cos(np.radians(angle)), 128 - 30 * np.sin(np.radians(angle)), 30, 30)
        paint_lesion(image, lobe, MUCOSA)
    attributes = attributes_of(image, lobes)
    assert attributes["surface"] == "lobulated"
    assert attributes["measures"]["lobes"] >= 2


def test_elevation_from_shading():
    assert attributes_of(*frame_with(dome=True))["elevation"] == "raised"
    flat = attributes_of(*frame_with((185, 95, 85), dome=False))
    assert flat["elevation"] == "flat"
    caption = caption_frame(done(frame_with((185, 95, 85), dome=False)[0]), frame_with()[1]).text
    assert "and flat," in caption


@pytest.mark.parametrize("cx, cy, expected, words", [
    (60, 50, "top left", "at the top left"), (160, 128, "centre", "in the centre"),
    (265, 128, "middle right", "on the right"), (160, 210, "bottom centre", "at the bottom"),
])
def test_position_in_thirds_of_the_view(cx, cy, expected, words):
    image, mask = frame_with(mask=ellipse(cx, cy, 22, 20))
    caption = caption_frame(done(image), mask)
    assert caption.attributes["position"] == expected
    assert f", {words}, " in caption.text


def with_background(kind: str) -> tuple[np.ndarray, np.ndarray]:
    image, mask = frame_with(mask=ellipse(160, 128, 35, 32))
    if kind == "debris":  # yellow patches on the wall
        for cx, cy in ((60, 60), (250, 70), (70, 200), (240, 190)):
            image[ellipse(cx, cy, 9, 6)] = (205, 170, 45)
    elif kind == "blood":
        for cx, cy in ((60, 70), (250, 190)):
            image[ellipse(cx, cy, 14, 9)] = (150, 5, 22)
    elif kind == "lumen":
        image[ellipse(255, 70, 32, 28)] = (14, 8, 8)
    elif kind == "bubbles":  # ring reflections: bright outlines round a darker middle
        import cv2

        canvas = done(image)
        for cx, cy in ((55, 60), (85, 55), (70, 195), (255, 190), (245, 60)):
            cv2.circle(canvas, (cx, cy), 9, (255, 255, 255), 2)
        return canvas.astype(np.float64), mask
    return image, mask


@pytest.mark.parametrize("kind, words", [
    ("debris", "against mucosa with yellowish debris"), ("blood", "against mucosa with blood"),
    ("lumen", "against clean mucosa and a dark lumen"), ("bubbles", "against mucosa with bubbles"),
])
def test_background_findings(kind, words):
    clean = caption_frame(done(with_background("none")[0]), with_background("none")[1])
    assert clean.attributes["background"] == [] and "against clean mucosa." in clean.text
    image, mask = with_background(kind)
    caption = caption_frame(done(image), mask)
    assert caption.attributes["background"] == [kind]
    assert words in caption.text


def test_lighting_specular_highlights_and_over_exposure():
    image, mask = frame_with()
    assert attributes_of(image, mask)["lighting"] == []
    glints = image.copy()
    for cx, cy in ((150, 115), (170, 122), (160, 140), (145, 135)):
        glints[ellipse(cx, cy, 3, 3)] = 255
    assert attributes_of(glints, mask)["lighting"] == ["specular highlights"]
    glare = image.copy()
    glare[BORDER:90, BORDER:110] = (252, 246, 240)  # a wall lit white at the top left
    caption = caption_frame(done(glare), mask)
    assert caption.attributes["lighting"] == ["over-exposed"] and caption.text.endswith("in an over-exposed view.")


def test_captions_are_deterministic_and_numbers_come_with_words():
    image, mask = with_background("debris")
    first, second = caption_frame(done(image), mask), caption_frame(done(image.copy()), mask.copy())
    assert first.text == second.text and first.attributes == second.attributes
    measures = first.attributes["measures"]
    assert {"delta_a", "fine_texture", "area_fraction", "solidity", "shading", "debris_fraction",
            "specular_fraction"} <= set(measures)


def test_several_polyps_are_described_one_by_one_largest_first():
    image = mucosa()
    small = paint_lesion(image, ellipse(70, 70, 12, 12), (200, 55, 60))
    large = paint_lesion(image, ellipse(200, 150, 55, 45), (215, 160, 145))
    caption = caption_frame(done(image), small | large)
    assert [p.attributes["colour"] for p in caption.polyps] == ["pale", "red"]
    assert [p.attributes["size"] for p in caption.polyps] == ["large", "diminutive"]
    assert caption.text.startswith("2 polyps. The largest is pale, ")
    assert caption.polyps[1].text.startswith("The polyp is red, smooth, diminutive")


def test_an_empty_mask_or_a_mask_of_another_size_is_refused():
    image, _ = frame_with()
    with pytest.raises(NoPolyp):
        caption_frame(done(image), np.zeros((H, W), bool))
    from engine.errors import InputError

    with pytest.raises(InputError, match="mask is 100×100 but the frame is 320×256"):
        caption_frame(done(image), np.ones((100, 100), bool))


# ---------------------------------------------------------------------------------------------- the command
@pytest.fixture()
def folder(tmp_path) -> Path:
    """A Kvasir-layout folder: three frames with masks (one with two polyps), one frame without a mask."""
    root = tmp_path / "frames"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    specs = {"a": [(ellipse(160, 128, 45, 40), (200, 55, 60))],
             "b": [(ellipse(160, 128, 45, 40), (215, 160, 145))],
             "c": [(ellipse(90, 90, 40, 36), MUCOSA), (ellipse(240, 180, 15, 15), (200, 55, 60))]}
    for name, polyps in specs.items():
        image, union = mucosa(seed=len(name)), np.zeros((H, W), bool)
        for mask, colour in polyps:
            union |= paint_lesion(image, mask, colour)
        Image.fromarray(done(image)).save(root / "images" / f"{name}.png")
        Image.fromarray(union.astype(np.uint8) * 255).save(root / "masks" / f"{name}.png")
    Image.fromarray(done(mucosa(seed=9))).save(root / "images" / "d.png")
    return root


def run_caption(*args) -> int:
    import main

    return main.main(["caption", *map(str, args), "--quiet"])


def test_caption_command_writes_a_file_the_reader_and_the_job_take(folder, tmp_path, capsys):
    out = tmp_path / "captions.csv"
    assert run_caption("--input", folder, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "3 of 4 frames captioned (4 polyps), 1 without a polyp mask, 0 failed" in printed
    assert "colour              " in printed and "red 1 (33%)" in printed
    captions = read_captions(out)
    assert set(captions) == {"a", "b", "c", "c#1", "c#2"}
    assert caption_for(captions, "a.png").startswith("The polyp is red, ")
    assert caption_for(captions, "b.png").startswith("The polyp is pale, ")
    assert caption_for(captions, "c.png").startswith("2 polyps. The largest is pink, ")
    assert captions["c#2"].startswith("The polyp is red, smooth, diminutive")
    assert caption_for(captions, "d.png") is None
    table = read_caption_table(out)
    assert table.columns == ["frame", "text", "attributes", "vlm_text", "source", "captioner"]
    row = next(r for r in table.rows if r.key == "c")
    attributes = json.loads(row.extra["attributes"])
    assert attributes["polyps"] == 2 and attributes["colour"] == "pink" and row.extra["source"] == "measured"
    assert row.extra["captioner"].startswith("polypforge ") and "measured-" in row.extra["captioner"]
    first = out.read_bytes()
    assert run_caption("--input", folder, "--out", tmp_path / "again.csv") == 0
    assert (tmp_path / "again.csv").read_bytes() == first  # deterministic, byte for byte
    assert not list(tmp_path.glob("*.partial.jsonl"))


def test_jsonl_output_and_the_json_summary(folder, tmp_path):
    out = tmp_path / "captions.jsonl"
    assert run_caption("--input", folder, "--out", out, "--json-summary", tmp_path / "s.json") == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["frame"] == "a" and lines[0]["attributes"]["colour"] == "red"
    assert read_captions(out)["a"] == lines[0]["text"]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["distribution"]["colour"] == {"pale": 1, "pink": 1, "red": 1}
    assert summary["without_mask"] == ["d.png"]


def test_a_bad_frame_is_named_and_the_others_are_captioned(folder, tmp_path, capsys):
    (folder / "images" / "e.png").write_bytes(b"not an image")
    (folder / "masks" / "e.png").write_bytes(b"not an image either")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(folder / "masks" / "d.png")  # an empty mask
    out = tmp_path / "captions.csv"
    assert run_caption("--input", folder, "--out", out) == 1
    captured = capsys.readouterr()
    assert f"failed: {folder / 'images' / 'e.png'}: not an image file" in captured.err
    assert "3 of 5 frames captioned" in captured.out and "1 without a polyp mask, 1 failed" in captured.out
    assert set(read_captions(out)) == {"a", "b", "c", "c#1", "c#2"}


def test_cannot_start_gives_one_line(folder, tmp_path, capsys):
    assert run_caption("--input", tmp_path / "nowhere", "--out", tmp_path / "c.csv") == 2
    assert "input folder not found" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(done(mucosa())).save(plain / "x.png")
    assert run_caption("--input", plain, "--out", tmp_path / "c.csv") == 2
    assert "no masks (give --masks DIR" in capsys.readouterr().err
    assert run_caption("--input", folder, "--out", tmp_path / "c.xlsx") == 2
    assert "must end in .csv, .tsv or .jsonl" in capsys.readouterr().err
    broken = tmp_path / "broken.csv"
    broken.write_text("frame,text\na,\n", encoding="utf-8")
    assert run_caption("--input", folder, "--out", broken) == 2
    assert "broken.csv:2: no text for frame 'a'; it would be overwritten" in capsys.readouterr().err
    assert broken.read_text() == "frame,text\na,\n"  # left as it was
    assert run_caption("--input", plain, "--masks", tmp_path / "c", "--out", tmp_path / "c.csv") == 2


def test_a_killed_run_resumes_and_gives_the_same_file(folder, tmp_path, monkeypatch):
    import engine.captioning.batch as batch

    reference = tmp_path / "reference.csv"
    assert run_caption("--input", folder, "--out", reference) == 0
    out = tmp_path / "captions.csv"
    calls = []
    real = batch.caption_frame

    def dies_on_the_second_frame(pixels, mask):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill in the middle of the run
        return real(pixels, mask)

    monkeypatch.setattr(batch, "caption_frame", dies_on_the_second_frame)
    with pytest.raises(KeyboardInterrupt):
        batch.caption_folder(folder, out)
    assert not out.exists() and (tmp_path / "captions.csv.partial.jsonl").exists()
    monkeypatch.setattr(batch, "caption_frame", real)
    summary = batch.caption_folder(folder, out)
    assert summary.reused == 1  # frame a was done before the kill
    assert out.read_bytes() == reference.read_bytes()
    assert not (tmp_path / "captions.csv.partial.jsonl").exists()


def test_rerunning_keeps_the_texts_a_curator_edited(folder, tmp_path):
    from engine.dataset.caption_writer import set_caption

    out = tmp_path / "captions.csv"
    assert run_caption("--input", folder, "--out", out) == 0
    set_caption(out, "b.png", "A pale, flat lesion with a  \n  central depression")
    assert run_caption("--input", folder, "--out", out) == 0
    table = read_caption_table(out)
    b = next(r for r in table.rows if r.key == "b")
    assert b.text == "A pale, flat lesion with a central depression" and b.extra["source"] == "curator"
    assert json.loads(b.extra["attributes"])["colour"] == "pale"  # measured afresh
    assert next(r for r in table.rows if r.key == "a").extra["source"] == "measured"


def test_the_measured_captioner_runs_without_torch(folder, tmp_path):
    code = (
        "import sys\n"
        "from engine.captioning.batch import caption_folder\n"
        f"summary = caption_folder({str(folder)!r}, {str(tmp_path / 'c.csv')!r})\n"
        "assert summary.captioned == 3, summary\n"
        "print(sorted(m for m in ('torch', 'transformers', 'diffusers', 'PySide6') if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "[]"


def test_every_threshold_is_documented_in_its_module():
    import re

    from engine.captioning import attributes, scene

    for module in (attributes, scene):
        source = Path(module.__file__).read_text(encoding="utf-8")
        names = re.findall(r"^([A-Z][A-Z_]+) = \(?-?[0-9]", source, flags=re.MULTILINE)
        assert names, module
        missing = [name for name in names if name not in module.__doc__]
        assert not missing, f"{module.__name__}: {missing} not in the docstring"
    words = {attributes.colour: attributes.COLOURS, attributes.surface: attributes.SURFACES,
             attributes.size: attributes.SIZES, attributes.outline: attributes.OUTLINES}
    image, mask = frame_with()
    built = scene.make_scene(done(image), mask)
    for function, vocabulary in words.items():
        assert function(built, 0)[0] in vocabulary


def test_odd_frames_and_masks_give_a_caption_or_no_polyp_never_a_crash():
    import cv2

    rng = np.random.default_rng(0)
    for case in range(24):
        height, width = (int(v) for v in rng.integers(20, 300, 2))
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if case % 3 else np.zeros((height, width, 3), np.uint8)
        mask = np.zeros((height, width), np.uint8)
        kind = case % 6
        if kind == 0:
            mask[:] = 1  # the whole frame
        elif kind == 1:
            mask[:4] = 1  # a strip on the edge
        elif kind == 2:
            cv2.line(mask, (0, 0), (width - 1, height - 1), 1, 1)  # one pixel wide
        elif kind == 3:
            mask[rng.integers(0, height, 30), rng.integers(0, width, 30)] = 1  # specks only
        elif kind == 4:
            cv2.circle(mask, (width // 2, height // 2), min(height, width) // 3, 1, -1)
        else:
            mask[height // 2:height // 2 + 5, width // 2:width // 2 + 5] = 1  # 25 pixels
        try:
            caption = caption_frame(frame, mask.astype(bool))
        except NoPolyp:
            assert kind == 3 or kind == 2 and min(height, width) < 16, (case, kind)
            continue
        assert caption.text.startswith(("The polyp is ", f"{len(caption.polyps)} polyps. "))


def test_shadowed_mucosa_and_a_blue_overlay_box_are_not_blood():
    image, mask = with_background("none")
    image[ellipse(60, 70, 14, 9)] = (125, 38, 38)  # a fold's dark red shadow (a* 37)
    image[200:230, 30:110] = (40, 10, 120)  # a navy overlay box, as some Kvasir frames carry
    assert "blood" not in caption_frame(done(image), mask).attributes["background"]
    image[ellipse(250, 190, 14, 9)] = (150, 5, 22)
    image[ellipse(250, 70, 14, 9)] = (150, 5, 22)
    assert "blood" in caption_frame(done(image), mask).attributes["background"]
