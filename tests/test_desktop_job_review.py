"""Desktop app: run a job on the demo bundle from the window, cancel one mid-run (the output stays
consistent), accept/reject results in the gallery with the keyboard (files and COCO follow), and errors
(bad bundle, full disk, an unexpected exception) are message boxes naming the file."""

from __future__ import annotations

import errno
import json
import shutil
import sys
import threading
import time

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt

from desktop.testing import temporary_settings, wait_until
from engine.jobs.spec import DEFAULT_MODEL
from engine.samples import generate_sample_set

JOB_TIMEOUT_MS = 60_000



@pytest.fixture()
def window(qtbot, tmp_path, monkeypatch, messages):
    monkeypatch.setenv("POLYPFORGE_SETTINGS", str(tmp_path / "settings.ini"))
    from desktop.views.main_window import MainWindow

    generate_sample_set(tmp_path / "frames", count=4, seed=5)
    win = MainWindow(temporary_settings(tmp_path))
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    win.open_folder(str(tmp_path / "frames"))
    assert wait_until(lambda: win.dataset.sources is not None and not win.bundles.busy(), 30)
    panel = win.panel
    panel.output.setText(str(tmp_path / "out"))
    panel.mask_source.setCurrentIndex(panel.mask_source.findData("random"))
    panel.variants.setValue(2)
    panel.steps.setValue(2)
    assert panel.model_judge.isChecked()  # on by default, as in main.py --batch
    panel.model_judge.setChecked(False)  # 2 steps paint noise the polyp judge rejects; the gate has its own tests
    assert panel.selected_bundle() == str(DEFAULT_MODEL.resolve())
    yield win
    win.shutdown()


def manifest(output):
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines() if line.strip()]


def coco_files(output):
    return {image["file_name"] for image in json.loads((output / "annotations" / "instances.json").read_text())["images"]}


def test_run_job_on_the_demo_bundle_writes_the_dataset_and_fills_the_gallery(window, qtbot, tmp_path, messages):
    progress = []
    window.job.progressChanged.connect(lambda: progress.append((window.job.state, window.job.progress.fraction)))
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS) as done:
        assert window.run_job()
        assert window.tabs.currentWidget() is window.run_page
        assert not window.run_button.isEnabled() and window.menu_actions.cancel_action.isEnabled()
    summary = done.args[0]
    output = tmp_path / "out"
    assert summary.status == "ok" and summary.ok == 8 and summary.provider == "cpu", summary
    records = manifest(output)
    assert len(records) == 8 and all(r["status"] == "ok" and r["steps"] == 2 for r in records)
    assert len(list((output / "images" / "train").glob("*.png"))) == 8
    assert coco_files(output) == {r["image"] for r in records}
    assert len(list((output / "labels" / "train").glob("*.txt"))) == 8
    assert (output / "summary.json").is_file() and (output / "contact_sheet.jpg").is_file()
    # what the window showed
    assert any(state == "running" and 0 < fraction < 1 for state, fraction in progress)
    assert window.run_page.bar.value() == 1000 and "Finished" in window.run_page.status.text()
    assert window.job.latest_preview is not None and not window.job.latest_preview[1].isNull()
    assert window.run_page.review_button.isEnabled() and window.run_button.isEnabled()
    assert window.review.model.rowCount() == 8
    row = window.bundles.row_for(DEFAULT_MODEL.resolve())
    assert window.bundles.rows[row].provider_confirmed
    assert messages.messages == []

    # open output folder goes through QDesktopServices
    opened = []
    from PySide6.QtGui import QDesktopServices

    qtbot_monkey = pytest.MonkeyPatch()
    qtbot_monkey.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile()) or True))
    try:
        assert window.open_output_folder()
    finally:
        qtbot_monkey.undo()
    assert opened == [str(output)]


def test_cancel_mid_run_stops_within_a_step_and_leaves_a_consistent_dataset(window, qtbot, tmp_path):
    window.panel.steps.setValue(60)
    window.panel.variants.setValue(3)
    cancelled_at = []

    def on_progress():
        p = window.job.progress
        if not cancelled_at and p.ok >= 1 and p.step >= 2:
            cancelled_at.append(time.monotonic())
            window.job.cancel()

    window.job.progressChanged.connect(on_progress)
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS) as done:
        assert window.run_job()
    stopped = time.monotonic() - cancelled_at[0]
    summary = done.args[0]
    assert summary.status == "cancelled" and 1 <= summary.ok < 12, summary
    assert stopped < 5, f"cancel took {stopped:.1f} s"
    output = tmp_path / "out"
    records = manifest(output)
    images = sorted(p.relative_to(output).as_posix() for p in (output / "images").rglob("*.png"))
    assert sorted(r["image"] for r in records if r["status"] == "ok") == images
    assert len(records) == len(images) == summary.ok
    assert coco_files(output) == set(images)
    assert not list(output.rglob(".*.tmp"))
    assert "Cancelled" in window.run_page.status.text()
    assert window.run_button.isEnabled()


def test_gallery_accept_reject_with_the_keyboard_updates_files_and_coco(window, qtbot, tmp_path):
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS):
        assert window.run_job()
    output = tmp_path / "out"
    page, review = window.review_page, window.review
    window.tabs.setCurrentWidget(page)
    window.activateWindow()
    page.list.setFocus()
    qtbot.waitUntil(lambda: page.current() is not None)
    first = page.current()
    assert first.status == "ok" and page.comparison.result is not None and not page.comparison.result.isNull()
    assert page.comparison.source is not None and not page.comparison.source.isNull()

    with qtbot.waitSignal(review.applied, timeout=20_000):
        qtbot.keyClick(page.list, Qt.Key.Key_R)
    assert not (output / first.record["image"]).exists()
    assert (output / "rejected" / first.record["image"]).exists()
    assert first.record["image"] not in coco_files(output) and len(coco_files(output)) == 7
    assert {r["key"]: r["status"] for r in manifest(output)}[first.key] == "rejected"
    assert page.current().key != first.key  # moved on to the next variant

    qtbot.keyClick(page.list, Qt.Key.Key_Left)
    assert page.current().key == first.key and page.current().status == "rejected"
    with qtbot.waitSignal(review.applied, timeout=20_000):
        qtbot.keyClick(page.list, Qt.Key.Key_A)
    assert (output / first.record["image"]).exists() and len(coco_files(output)) == 8
    assert all(r["status"] == "ok" for r in manifest(output))

    # a second window reviewing the same output folder sees the same statuses
    with qtbot.waitSignal(review.applied, timeout=20_000):
        review.set_status([i.key for i in review.model.items[:3]], accepted=False)
    assert window.load_review(output)
    assert [i.status for i in review.model.items].count("rejected") == 3
    assert len(list((output / "labels" / "train").glob("*.txt"))) == 5


def test_bad_bundle_is_a_message_naming_the_file(window, qtbot, tmp_path, messages):
    broken = tmp_path / "broken-bundle"
    broken.mkdir()
    (broken / "bundle.json").write_text("{ not json")
    window.add_bundle(broken)
    assert wait_until(lambda: not window.bundles.busy(), 20)
    row = window.bundles.rows[window.bundles.row_for(broken)]
    assert row.state == "broken" and "bundle.json" in row.problem
    assert window.panel.selected_bundle() == str(broken)
    assert window.run_job() is False
    assert "bundle.json" in messages.texts()[-1] and "not valid JSON" in messages.texts()[-1]

    # verified when listed, altered afterwards: the job refuses to start, and says which file
    altered = tmp_path / "altered-bundle"
    shutil.copytree(DEFAULT_MODEL, altered)
    window.add_bundle(altered)
    assert wait_until(lambda: not window.bundles.busy(), 20)
    assert window.bundles.rows[window.bundles.row_for(altered.resolve())].state == "ok"
    with open(altered / "unet" / "model.onnx", "ab") as handle:
        handle.write(b"tampered")
    with qtbot.waitSignal(window.job.cannotStart, timeout=JOB_TIMEOUT_MS):
        assert window.run_job()
    assert "unet/model.onnx" in messages.texts()[-1] and "sha256 mismatch" in messages.texts()[-1]
    assert window.run_button.isEnabled() and window.job.state == "idle"


def test_full_disk_during_a_job_is_a_message_not_a_crash(window, qtbot, monkeypatch, messages):
    from engine.jobs import runner

    def full(path, image):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner, "save_png_atomic", full)
    with qtbot.waitSignal(window.job.crashed, timeout=JOB_TIMEOUT_MS):
        assert window.run_job()
    text = messages.texts()[-1]
    assert "no space left" in text.lower() and ".png" in text and "Traceback" not in text
    assert window.run_button.isEnabled()


def test_excepthook_shows_uncaught_errors_in_a_dialog(qtbot, monkeypatch, messages, capsys, tmp_path):
    from desktop.errors import error_log_path, install_excepthook

    monkeypatch.setenv("POLYPFORGE_CACHE_DIR", str(tmp_path / "cache"))

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    install_excepthook()
    try:
        raise ValueError("something odd")
    except ValueError:
        sys.excepthook(*sys.exc_info())
    assert wait_until(lambda: messages.texts(), 5)
    assert "ValueError: something odd" in messages.texts()[-1]
    assert str(error_log_path()) in messages.texts()[-1]
    assert "Traceback" in error_log_path().read_text() and "something odd" in error_log_path().read_text()
    thread = threading.Thread(target=lambda: (_ for _ in ()).throw(OSError(errno.EACCES, "Permission denied", "/x/y")))
    thread.start()
    thread.join()
    assert wait_until(lambda: len(messages.texts()) == 2, 5)
    assert "/x/y" in messages.texts()[-1]
    assert "Traceback" in capsys.readouterr().err


def test_retrieved_mask_source_runs_with_the_chosen_database(window, qtbot, tmp_path, messages, retrieval_db):
    assert window.retrieval.available
    panel = window.panel
    panel.mask_source.setCurrentIndex(panel.mask_source.findData("retrieved"))
    assert window.run_job() is False and "retrieval database" in messages.texts()[-1]
    with qtbot.waitSignal(window.retrieval.opened, timeout=20_000):
        window.retrieval.open_database(retrieval_db)
    window.editor_page.top_k.setValue(3)
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS) as done:
        assert window.run_job()
    assert window.job.spec.db == retrieval_db and window.job.spec.top_k == 3
    summary = done.args[0]
    assert summary.status in ("ok", "failures") and summary.ok + summary.skipped + summary.failed == 8, summary
    records = manifest(tmp_path / "out")
    assert {r["mask_source"] for r in records} == {"retrieved"}


def test_controlnet_bundle_with_a_prompt_and_captions(window, qtbot, tmp_path, messages):
    from engine.bundle.format import shipped_bundles_folder

    controlnet = (shipped_bundles_folder() / "demo-sd-controlnet").resolve()
    row = window.bundles.row_for(controlnet)
    assert row >= 0 and window.bundles.rows[row].kind == "sd-controlnet" and window.bundles.rows[row].state == "ok"
    window.panel.select_bundle(str(controlnet))
    window.panel.prompt.setText("a pale pink, smooth polyp")
    captions = tmp_path / "captions.csv"
    captions.write_text("frame,text\nsample_000,a red lobulated polyp with vessels\n")
    window.panel.captions.setText(str(captions))
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS) as done:
        assert window.run_job()
    summary = done.args[0]
    assert summary.status == "ok" and summary.ok == 8, summary
    prompts = {r["source_frame"]: r["prompt"] for r in manifest(tmp_path / "out")}
    assert prompts["sample_000.png"] == "a red lobulated polyp with vessels"  # the caption wins for its frame
    assert prompts["sample_001.png"] == "a pale pink, smooth polyp"  # the job prompt for the others
    assert all(r["bundle_kind"] == "sd-controlnet" for r in manifest(tmp_path / "out"))


def test_a_locked_output_folder_shows_the_lock_message_instead_of_starting(window, qtbot, tmp_path, messages,
                                                                             lock_holder):
    output = tmp_path / "out"
    pid = lock_holder(output)  # a job in a terminal writing the same folder
    started = []
    window.job.stateChanged.connect(started.append)
    assert window.run_job() is False
    title_and_text = messages.texts()[-1]
    assert title_and_text.startswith("The output folder is in use: ")
    assert f"a job (pid {pid} on " in title_and_text and "is writing this folder" in title_and_text
    assert started == [] and window.job.state == "idle" and window.run_button.isEnabled()
    assert sorted(p.name for p in output.iterdir()) == ["job.lock"]  # nothing was written


def test_accept_reject_in_the_gallery_waits_for_a_job_writing_the_folder(window, qtbot, tmp_path, messages,
                                                                        lock_holder):
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS):
        assert window.run_job()
    output = tmp_path / "out"
    before = (output / "manifest.jsonl").read_bytes()
    pid = lock_holder(output)
    first = window.review.model.items[0]
    with qtbot.waitSignal(window.review.failed, timeout=20_000):
        window.review.reject(first.key)
    assert f"pid {pid}" in messages.texts()[-1] and "cannot accept or reject now" in messages.texts()[-1]
    assert (output / "manifest.jsonl").read_bytes() == before and (output / first.record["image"]).exists()
    assert not window.review.model.items[0].pending and window.review.model.items[0].status == "ok"


def test_judge_options_in_the_run_panel_reach_the_job_and_are_remembered(window, qtbot, tmp_path, messages):
    from desktop.settings import JobSettings
    from judge_helpers import random_judge

    judge = random_judge(tmp_path / "judge")
    panel = window.panel
    assert not panel.judge.isEnabled()  # off by default: its options wait for the switch
    panel.use_judge.setChecked(True)
    assert panel.judge.isEnabled() and panel.max_attempts.isEnabled()
    panel.judge.setText(str(judge))
    panel.min_judge_score.setValue(1.0)  # nothing scores 1: every attempt is rejected
    panel.max_attempts.setValue(2)
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS) as done:
        assert window.run_job()
    summary = done.args[0]
    output = tmp_path / "out"
    records = manifest(output)
    assert len(records) == 8 and summary.rejected == 8, summary
    assert all(r["status"] == "rejected" and r["reason"] == "judge" and len(r["judge"]["attempts"]) == 2
               for r in records)
    assert not list((output / "images" / "train").glob("*.png")) and coco_files(output) == set()
    assert messages.messages == []

    remembered = JobSettings.load(window.settings)
    assert (remembered.use_judge, remembered.judge, remembered.min_judge_score, remembered.max_attempts) == (
        True, str(judge), 1.0, 2)
    assert not panel.model_judge.isEnabled()  # a judge of one's own replaces the model's
    panel.use_judge.setChecked(False)  # off: the job gets no judge settings at all, only the model's judge switch
    values = panel.settings().spec_values(tmp_path / "frames", None)
    assert "judge" not in values and values["model_judge"] is False and panel.model_judge.isEnabled()
    panel.model_judge.setChecked(True)
    assert panel.settings().spec_values(tmp_path / "frames", None)["model_judge"] is True
    assert JobSettings.load(window.settings).model_judge is True  # remembered
    # the removals' mucosa check: on by default, a switch of remove mode only, remembered
    assert panel.mucosa_check.isChecked() and not panel.mucosa_check.isEnabled()  # add mode here
    panel.mode.setCurrentIndex(panel.mode.findData("remove"))
    assert panel.mucosa_check.isEnabled()
    assert panel.settings().spec_values(tmp_path / "frames", None)["mucosa_check"] is True
    panel.mucosa_check.setChecked(False)
    assert panel.settings().spec_values(tmp_path / "frames", None)["mucosa_check"] is False
    assert JobSettings.load(window.settings).mucosa_check is False  # remembered


def test_transplant_from_the_window_moves_the_frames_own_polyps(window, qtbot, tmp_path, messages):
    """Mode transplant in the settings panel: the blending and strength reach the job and its manifest, and the
    strength is only editable with the model blending."""
    panel = window.panel
    panel.mask_source.setCurrentIndex(panel.mask_source.findData("user"))
    panel.mode.setCurrentIndex(panel.mode.findData("transplant"))
    panel.harmonize.setCurrentIndex(panel.harmonize.findData("poisson"))
    assert panel.harmonize.isEnabled() and not panel.strength.isEnabled()
    panel.harmonize.setCurrentIndex(panel.harmonize.findData("model"))
    assert panel.strength.isEnabled()
    panel.strength.setValue(0.45)
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS) as done:
        assert window.run_job()
    summary = done.args[0]
    assert summary.status == "ok" and summary.ok >= 2, (summary, messages.texts())
    ok = [r for r in manifest(tmp_path / "out") if r["status"] == "ok"]
    assert {r["mode"] for r in ok} == {"transplant"}
    assert {(r["transplant"]["harmonize"], r["transplant"]["strength"]) for r in ok} == {("model", 0.45)}
    panel.mode.setCurrentIndex(panel.mode.findData("add"))
    assert not panel.harmonize.isEnabled() and not panel.strength.isEnabled()


def test_attributes_in_the_settings_panel_reach_the_job_and_are_remembered(window, qtbot, tmp_path, messages):
    """The attributes field (mode add): its words reach the job's spec and are remembered; the default model, trained
    without attributes, refuses to be asked words with a message naming it; auto leaves it as it was."""
    from desktop.settings import JobSettings

    panel = window.panel
    assert panel.attributes.currentText() == "auto" and panel.attributes.isEnabled()
    assert window.job_values()["attributes"] == "auto"
    panel.attributes.setCurrentText("red,lobulated")
    panel.attributes.lineEdit().editingFinished.emit()
    assert window.job_values()["attributes"] == "red,lobulated"
    assert JobSettings.load(window.settings).attributes == "red,lobulated"
    with qtbot.waitSignal(window.job.cannotStart, timeout=JOB_TIMEOUT_MS):
        assert window.run_job()
    assert "was not trained with attributes" in messages.texts()[-1] and "polypforge-compact" in messages.texts()[-1]
    assert window.run_button.isEnabled()
    panel.attributes.setCurrentText("red,blue")  # an unknown word: refused before anything starts, with the words
    assert window.run_job() is False
    assert "unknown word 'blue'" in messages.texts()[-1] and "lobulated" in messages.texts()[-1]
    # the attributes' own guidance: "as guidance" (None) until set; set, it reaches the job and is remembered, and
    # the default model (no attributes to guide) refuses it by name
    panel.attributes.setCurrentText("auto")
    panel.attributes.lineEdit().editingFinished.emit()
    assert panel.attribute_guidance.specialValueText() == "as guidance"
    assert window.job_values()["attribute_guidance"] is None
    panel.attribute_guidance.setValue(5.0)
    assert window.job_values()["attribute_guidance"] == 5.0
    assert JobSettings.load(window.settings).attribute_guidance == 5.0
    with qtbot.waitSignal(window.job.cannotStart, timeout=JOB_TIMEOUT_MS):
        assert window.run_job()
    assert "nothing for attribute guidance (--attribute-guidance) to guide" in messages.texts()[-1]
    panel.mode.setCurrentIndex(panel.mode.findData("remove"))  # removal stays a prompt: nothing asked
    assert not panel.attributes.isEnabled() and "attributes" not in window.job_values()
    assert not panel.attribute_guidance.isEnabled() and "attribute_guidance" not in window.job_values()


def test_the_mask_source_follows_the_mode_as_the_engines_default_does(window):
    """Add starts at random masks (the engine's default for add); remove and transplant need the frames' own
    masks, so choosing them moves random to the drawn / file masks, and add brings random back, while a
    source the curator picked by hand stays."""
    from desktop.settings import JobSettings
    from engine.jobs.spec import default_mask_source

    assert JobSettings().mask_source == default_mask_source(JobSettings().mode) == "random"
    panel = window.panel
    panel.mode.setCurrentIndex(panel.mode.findData("remove"))
    assert panel.mask_source.currentData() == "user" and panel.settings().mask_source == "user"
    panel.mode.setCurrentIndex(panel.mode.findData("add"))
    assert panel.mask_source.currentData() == "random"
    panel.mode.setCurrentIndex(panel.mode.findData("transplant"))
    panel.mask_source.setCurrentIndex(panel.mask_source.findData("box"))  # by hand
    panel.mode.setCurrentIndex(panel.mode.findData("add"))
    assert panel.mask_source.currentData() == "box"


def test_the_guidance_interval_and_the_attribute_share_reach_the_job_and_are_remembered(window, qtbot, tmp_path,
                                                                                       messages):
    """The app's fields for --guidance-interval and --attribute-guidance-until: empty / "model default" send
    nothing; set, they reach the job (the interval into every manifest line) and are remembered; an interval that
    covers no step of the run is refused before anything starts, in one line."""
    from desktop.settings import JobSettings

    panel = window.panel
    assert "guidance_interval" not in window.job_values() and "attribute_guidance_until" not in window.job_values()
    assert not panel.attribute_guidance_until.isEnabled()  # only with the attributes' own guidance
    panel.attribute_guidance.setValue(5.0)
    panel.attribute_guidance_until.setValue(0.3)
    assert panel.attribute_guidance_until.isEnabled() and window.job_values()["attribute_guidance_until"] == 0.3
    assert JobSettings.load(window.settings).attribute_guidance_until == 0.3
    panel.attribute_guidance.setValue(-0.5)  # back to "as guidance": the share goes with it
    assert "attribute_guidance_until" not in window.job_values()
    panel.guidance_interval.setText("0.9-1")  # 2 steps start at shares 0 and 0.5: none inside
    panel.guidance_interval.editingFinished.emit()
    with qtbot.waitSignal(window.job.cannotStart, timeout=JOB_TIMEOUT_MS):
        assert window.run_job()
    assert "guidance interval" in messages.texts()[-1]
    panel.guidance_interval.setText("0.2-0.8")
    panel.guidance_interval.editingFinished.emit()
    assert window.job_values()["guidance_interval"] == "0.2-0.8"
    assert JobSettings.load(window.settings).guidance_interval == "0.2-0.8"
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS) as done:
        assert window.run_job()
    assert done.args[0].status == "ok", messages.texts()
    assert {tuple(r["guidance_interval"]) for r in manifest(tmp_path / "out")} == {(0.2, 0.8)}
    panel.mode.setCurrentIndex(panel.mode.findData("transplant"))  # moves real polyps: nothing to guide
    assert not panel.guidance_interval.isEnabled() and "guidance_interval" not in window.job_values()
    settings = QSettings(str(tmp_path / "bad.ini"), QSettings.Format.IniFormat)
    settings.setValue("job/guidance_interval", "0.8-0.2")  # unreadable on load: every step
    assert JobSettings.load(settings).guidance_interval == ""
