"""The removals' mucosa check (engine.judge.mucosa_check): a fill darker than the mucosa around it is painted again
with the next seed, then written to rejected/; on by default in main.py --batch, the app and the demo, off in the
engine's JobSpec and in the evaluation's arms; --no-mucosa-check keeps every removal as painted."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import main
from engine.errors import InputError
from engine.jobs import build_spec
from engine.jobs.arm_presets import arm_job_values
from engine.judge import mucosa_check
from engine.judge.mucosa_check import MucosaCheck, measure_fill
from engine.judge.rejection import attempt_seed, attempts_of, generate_judged, mucosa_tally, open_mucosa_check
from engine.samples import generate_sample_set


def _mucosa(height=240, width=300, level=150.0, seed=0) -> np.ndarray:
    """Textured mucosa-coloured frame at luma about ``level``."""
    rng = np.random.default_rng(seed)
    grain = rng.normal(0, 6, (height, width, 1))
    base = np.array([level * 1.25, level * 0.9, level * 0.8])
    return np.clip(base + grain, 0, 255).astype(np.uint8)


def _box(height=240, width=300) -> np.ndarray:
    region = np.zeros((height, width), bool)
    region[80:160, 100:200] = True
    return region


def test_a_dark_fill_is_measured_as_darker_than_its_ring_and_fails():
    region = _box()
    light = _mucosa()
    dark = light.copy()
    dark[region] = (dark[region] * 0.5).astype(np.uint8)
    same, darker = measure_fill(light, region), measure_fill(dark, region)
    assert abs(same.darkness) < 3 and 0.8 < same.detail < 1.25
    assert darker.darkness < -50
    assert same.area == pytest.approx(region.mean())
    check = MucosaCheck()
    assert check.check(light, region)[0] and not check.check(dark, region)[0]
    # a fill just within the threshold passes, just beyond fails
    assert MucosaCheck(max_darkness=abs(darker.darkness) + 1).check(dark, region)[0]
    # a flat (blurred) fill has less detail than its ring
    flat = light.copy()
    flat[region] = np.array([188, 135, 120], np.uint8)
    assert measure_fill(flat, region).detail < 0.2


def test_a_region_with_no_mucosa_around_it_is_not_judged():
    black = np.zeros((240, 300, 3), np.uint8)  # the view's black border all round: no ring to compare with
    passed, measured = MucosaCheck().check(black, _box())
    assert measured is None and passed


def _attempts(*levels):
    """generate(seed) returning, attempt by attempt, a frame whose box is at each luma factor of its mucosa."""
    region = _box()
    calls = []

    def generate(seed):
        frame = _mucosa()
        factor = levels[min(len(calls), len(levels) - 1)]
        frame[region] = (frame[region] * factor).astype(np.uint8)
        calls.append(seed)
        return SimpleNamespace(image=frame)

    return generate, calls, region


def test_a_dark_removal_is_painted_again_with_the_next_seeds_and_the_first_light_one_kept():
    generate, calls, region = _attempts(0.5, 0.6, 1.0, 1.0)
    judged = generate_judged(None, generate, 7, "remove", [], [], MucosaCheck(), region, max_attempts=4)
    assert judged.accepted and calls == [attempt_seed(7, k) for k in range(3)] and judged.seed == calls[-1]
    record = judged.record(None, MucosaCheck())
    check = record["mucosa_check"]
    assert "judge" not in record and "status" not in record and record["seed"] == calls[-1]
    assert check["passed"] and len(check["attempts"]) == 3 and check["max_darkness"] == 15.0
    assert [a["seed"] for a in check["attempts"]] == calls
    assert check["attempts"][0]["darkness"] < -15 and check["attempts"][1]["darkness"] < -15
    assert check["darkness"] == check["attempts"][2]["darkness"] and abs(check["darkness"]) < 3


def test_a_removal_dark_at_every_attempt_is_rejected_for_its_dark_fill_keeping_its_lightest_painting():
    generate, calls, region = _attempts(0.5, 0.8, 0.4, 0.45)
    judged = generate_judged(None, generate, 3, "remove", [], [], MucosaCheck(), region, max_attempts=4)
    record = judged.record(None, MucosaCheck())
    assert not judged.accepted and len(calls) == 4
    assert record["status"] == "rejected" and record["reason"] == "dark fill"
    check = record["mucosa_check"]
    assert not check["passed"] and len(check["attempts"]) == 4
    lightest = max(check["attempts"], key=lambda a: a["darkness"])
    assert lightest is check["attempts"][1] and record["seed"] == calls[1] == lightest["seed"]
    assert check["darkness"] == lightest["darkness"]
    assert measure_fill(judged.result.image, region).darkness == pytest.approx(lightest["darkness"], abs=0.01)
    assert "0 after painting again, 1 still dark" in mucosa_tally([record])
    assert "still dark" in mucosa_tally([record | {"status": "rejected"}])


def test_the_check_looks_at_removals_only():
    generate, calls, region = _attempts(0.5)
    judged = generate_judged(None, generate, 3, "add", [], [], MucosaCheck(), region, max_attempts=4)
    assert judged.accepted and len(calls) == 1 and judged.record(None, MucosaCheck()) == {}


def test_the_job_spec_front_doors_and_arms():
    remove = {"input": "in", "output": "out", "mode": "remove", "mask_source": "box"}
    # the engine's own default is off; on, a removal job paints up to 4 times unless told otherwise
    assert open_mucosa_check(build_spec(remove)) is None and attempts_of(build_spec(remove)) == 1
    checked = build_spec({**remove, "mucosa_check": True})
    assert open_mucosa_check(checked) is not None and attempts_of(checked) == 4
    assert attempts_of(build_spec({**remove, "mucosa_check": True, "max_attempts": 2})) == 2
    # max_attempts without a judge is fine for a checked removal, refused for an unchecked one
    with pytest.raises(InputError, match="judge"):
        build_spec({**remove, "max_attempts": 3})
    # what shapes output: the check (and its attempts) for checked removals only, so older jobs still resume
    assert checked.settings_that_shape_output()["mucosa_check"] is True
    assert "max_attempts" in checked.settings_that_shape_output()
    assert "mucosa_check" not in build_spec(remove).settings_that_shape_output()
    add = build_spec({"input": "in", "output": "out", "mask_source": "random", "mucosa_check": True})
    assert open_mucosa_check(add) is None and "mucosa_check" not in add.settings_that_shape_output()
    # the evaluation's removal arm stays the unchecked baseline, even on settings that ask for the check
    assert "mucosa_check" not in arm_job_values("removal", {**remove, "mucosa_check": True})


def test_the_app_asks_for_the_check_on_removals():
    from desktop.settings import JobSettings

    settings = JobSettings(mode="remove", mask_source="box")
    assert settings.spec_values(Path("in"), None)["mucosa_check"] is True
    assert "mucosa_check" not in JobSettings(mode="add").spec_values(Path("in"), None)
    settings.mucosa_check = False
    assert settings.spec_values(Path("in"), None)["mucosa_check"] is False


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    generate_sample_set(root, count=3, seed=11, width=192, height=160, with_polyps_every=1)
    return root


def _remove(frames, output, *extra):
    return main.main(["--batch", "--quiet", "--input", str(frames), "--output", str(output), "--mode", "remove",
                      "--mask-source", "box", "--steps", "2", "--threads", "1", *extra])


def _lines(output):
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines() if line.strip()]


def test_a_removal_job_checks_by_default_and_records_what_it_measured(frames, tmp_path):
    """The default model removes at boxes; every line records the check; a kept removal is as light as its ring
    by the measure of the image written, a rejected one was dark at every attempt and lies in rejected/."""
    from engine.dataset.image_reader import read_frame

    output = tmp_path / "checked"
    assert _remove(frames, output) in (0, 1)
    lines = _lines(output)
    assert lines and all("mucosa_check" in r for r in lines if r["status"] in ("ok", "rejected"))
    for record in lines:
        check = record["mucosa_check"]
        if record["status"] == "ok":
            image = read_frame(output / record["image"])
            repainted = np.zeros(image.shape[:2], bool)
            from engine.masks.instances import padded_box_mask

            for removed in record["removed"]:
                repainted |= padded_box_mask(tuple(removed["bbox"]), 15, image.shape[0], image.shape[1])
            measured = measure_fill(image, repainted)
            assert check["passed"] and (measured is None or measured.darkness >= -15)
            if measured is not None:
                assert measured.darkness == pytest.approx(check["darkness"], abs=0.6)  # the image written was measured
            assert all(a["darkness"] is not None and a["darkness"] < -15 for a in check["attempts"][:-1])
        elif record["status"] == "rejected":
            assert record["reason"] == "dark fill" and len(check["attempts"]) == 4
            assert (output / "rejected" / record["image"]).is_file() and not (output / record["image"]).exists()
    summary = json.loads((output / "summary.json").read_text())
    assert any(note.startswith("mucosa check: a removal") for note in summary["notes"])
    assert any("at the first painting" in note for note in summary["notes"])
    # --no-mucosa-check: every removal as first painted, nothing recorded; resuming the checked folder so is refused
    plain = tmp_path / "plain"
    assert _remove(frames, plain, "--no-mucosa-check") == 0
    assert all("mucosa_check" not in r and r["status"] == "ok" for r in _lines(plain))


def test_a_strict_check_rejects_every_removal_after_its_attempts(frames, tmp_path, monkeypatch):
    monkeypatch.setattr(mucosa_check, "DEFAULT_MAX_DARKNESS", -1000.0)  # a fill must be 1000 levels lighter: never
    output = tmp_path / "strict"
    assert _remove(frames, output, "--max-attempts", "2") in (0, 1)
    lines = [r for r in _lines(output) if r["status"] in ("ok", "rejected")]
    assert lines and all(r["status"] == "rejected" and r["reason"] == "dark fill" for r in lines)
    assert all(len(r["mucosa_check"]["attempts"]) == 2 for r in lines)
    assert not list((output / "images").rglob("*.png"))
    summary = json.loads((output / "summary.json").read_text())
    assert summary["rejected"] == len(lines)
    assert any(f"0 after painting again, {len(lines)} still dark" in note for note in summary["notes"])
    # the curator can still accept one in the review gallery: it joins the dataset
    from engine.jobs.review import set_review

    records = set_review(output, [lines[0]["key"]], accepted=True)
    assert {r["key"]: r["status"] for r in records}[lines[0]["key"]] == "ok"
    assert (output / lines[0]["image"]).is_file() and not (output / "rejected" / lines[0]["image"]).exists()
    coco = json.loads((output / "annotations" / "instances.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == [lines[0]["image"]]


def test_a_removal_job_from_before_the_check_resumes_with_the_way_out(frames, tmp_path, capsys):
    output = tmp_path / "old"
    assert _remove(frames, output, "--no-mucosa-check") == 0
    capsys.readouterr()
    assert _remove(frames, output) != 0
    assert "--no-mucosa-check resumes it as it was" in capsys.readouterr().err
    assert _remove(frames, output, "--no-mucosa-check") == 0  # as it was: everything reused


def test_a_judged_removal_with_the_check_records_the_attempts_it_was_painted_up_to(frames, tmp_path):
    """--judge without --max-attempts on a checked removal: both checks share the check's 4 attempts, and the judge's
    record says 4 (it said 1 while painting up to 4)."""
    from judge_helpers import random_judge

    judge = random_judge(tmp_path / "judge")
    output = tmp_path / "judged"
    assert _remove(frames, output, "--judge", str(judge)) in (0, 1)
    lines = [r for r in _lines(output) if r["status"] in ("ok", "rejected")]
    assert lines and all(r["judge"]["max_attempts"] == 4 for r in lines)
    assert all(len(r["judge"]["attempts"]) == len(r["mucosa_check"]["attempts"]) <= 4 for r in lines)
