"""Desktop: Evaluate… runs the learning curve (engine.evaluation.learning_curve) on the open dataset. The form
becomes the engine's CurveSettings and the arms' job files (the synthetic arm = the app's generation settings),
Plan shows the engine's plan, Start really trains (tiny settings) with one progress bar and opens report.html,
Cancel stops it and a second Start resumes it (finished runs reused), errors are messages naming the file, and
an installation without torch gets one line saying what to install while the rest of the app keeps working."""

from __future__ import annotations

import json
import threading
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices

from desktop import settings as app_settings
from desktop.testing import temporary_settings, wait_until
from desktop.viewmodels import evaluation as vm
from engine.bundle.format import shipped_bundles_folder
from engine.errors import InputError
from engine.samples import generate_sample_set

DEMO_MODEL = shipped_bundles_folder() / "demo-sd-inpaint"
# The engine test's tiny budget (tests/test_learning_curve.py): a 3-level U-Net at 32², 20 steps a run.
TUNING = {"size": 32, "widths": (4, 8, 16), "validate_every": 10, "patience": 3}
RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """40 generated training frames with masks, 6 test frames, 4 polyp-free frames (as test_learning_curve)."""
    root = tmp_path_factory.mktemp("eval-frames")
    generate_sample_set(root / "train", count=40, seed=1, width=96, height=80, with_polyps_every=1)
    generate_sample_set(root / "test", count=6, seed=2, width=96, height=80, with_polyps_every=1)
    generate_sample_set(root / "normal", count=4, seed=3, width=96, height=80, with_polyps_every=0)
    return root


@pytest.fixture()
def window(qtbot, tmp_path, monkeypatch, messages, frames):
    monkeypatch.setenv("POLYPFORGE_SETTINGS", str(tmp_path / "settings.ini"))
    from desktop.views.main_window import MainWindow

    win = MainWindow(temporary_settings(tmp_path))
    qtbot.addWidget(win)
    win.show()
    assert not win.menu_actions.evaluate_action.isEnabled()  # no dataset open yet
    win.open_folder(str(frames / "train"))
    assert wait_until(lambda: win.dataset.sources is not None and not win.bundles.busy(), 60)
    assert win.menu_actions.evaluate_action.isEnabled()
    yield win
    win.evaluation.wait(RUN_TIMEOUT * 1000)
    win.shutdown()


def _dialog(window, frames, tmp_path, *, arms=(), seeds=1, fractions="0.25"):
    """Evaluate… opened from the action, its form filled with the tiny settings."""
    window.menu_actions.evaluate_action.trigger()
    dialog = window.evaluation_dialog
    assert dialog is not None and dialog.isVisible()
    assert wait_until(lambda: window.evaluation.problem is not None, 120)
    assert window.evaluation.problem == "" and dialog.start_button.isEnabled()
    window.evaluation.tuning = dict(TUNING)
    dialog.tests.setPlainText(f"test={frames / 'test'}")
    dialog.output.setText(str(tmp_path / "eval"))
    dialog.fractions.setText(fractions)
    dialog.seeds.setValue(seeds)
    dialog.subset_draws.setValue(0)  # draws remembered by an earlier test are not this one's
    dialog.max_steps.setValue(20)
    dialog.threads.setValue(1)
    for arm in (*vm.ARMS, *vm.MIXES):
        dialog.arm_boxes[arm.field].setChecked(arm.name in arms)
    return dialog


def test_the_form_becomes_the_engines_settings_and_the_arms_job_files(window, frames, tmp_path, messages):
    from engine.jobs import build_spec, read_job_file

    panel = window.panel
    panel.select_bundle(str(DEMO_MODEL))
    panel.mask_source.setCurrentIndex(panel.mask_source.findData("random"))
    panel.variants.setValue(3)
    panel.seed.setValue(7)
    assert Path(window.job_values()["model"]).resolve() == DEMO_MODEL.resolve()
    form = app_settings.EvaluationForm(tests=f"kvasir={frames / 'test'}\n{frames / 'normal'}\n",
                                       normals=str(frames / "normal"), fractions="0.5, 0.1", seeds=2,
                                       max_steps=300, threads=1, synthetic_arm=True, copy_paste_arm=True,
                                       transplant_arm=True, judged_arm=True, removal_arm=True)
    settings = vm.curve_settings(form, frames / "train", window.job_values())
    out = frames / "train-evaluation"  # the default: beside the dataset
    assert settings.train == frames / "train" and settings.out == out
    assert settings.tests == {"kvasir": frames / "test", "normal": frames / "normal"}
    assert settings.normals == frames / "normal" and settings.fractions == (0.1, 0.5) and settings.seeds == 2
    assert settings.max_steps == 300 and settings.threads == 1 and not settings.fresh
    named = ("synthetic", "copy-paste", "transplant", "synthetic-judged", "removal")
    assert settings.arms == {name: out / "jobs" / f"{name}.toml" for name in named}
    assert settings.arm_names() == ["real", *named]
    # the synthetic arm is the app's current generation settings; the evaluation sets input, output and split
    synthetic = read_job_file(settings.arms["synthetic"])
    assert synthetic["model"] == str(DEMO_MODEL.resolve()) and synthetic["mask_source"] == "random"
    assert synthetic["variants"] == 3 and synthetic["seed"] == 7 and synthetic["mode"] == "add"
    assert not {"input", "output", "masks", "resume", "split_file"} & set(synthetic)
    copy_paste = read_job_file(settings.arms["copy-paste"])
    assert copy_paste == {"mode": "transplant", "harmonize": "none", "variants": 3, "seed": 7,
                          "formats": ["coco", "yolo", "yolo-seg"]}
    transplant = read_job_file(settings.arms["transplant"])
    assert transplant["harmonize"] == "model" and transplant["strength"] == 0.3
    assert transplant["model"] == synthetic["model"]
    # the judge-kept arm: the synthetic arm's job with the shipped judge, more tries and at least two per frame
    judged = read_job_file(settings.arms["synthetic-judged"])
    assert {k: v for k, v in judged.items() if k not in ("judge", "min_judge_score", "max_attempts")} == synthetic
    assert Path(judged["judge"]) == (shipped_bundles_folder() / "polyp-judge").resolve()
    assert (judged["min_judge_score"], judged["max_attempts"], judged["variants"]) == (0.5, 4, 3)
    removal = read_job_file(settings.arms["removal"])  # the subset's polyps removed by the app's model
    assert removal == {"mode": "remove", "mask_source": "box", "variants": 3, "seed": 7, "model": synthetic["model"],
                       "provider": synthetic["provider"], "formats": ["coco", "yolo", "yolo-seg"]}
    for job in settings.arms.values():  # each a job the batch job accepts
        build_spec({**read_job_file(job), "input": frames / "train", "output": tmp_path / "o"}, source=str(job))
        assert tomllib.loads(job.read_text())  # plain TOML, written whole
    # the engine's defaults where the form leaves them open
    defaults = vm.curve_settings(app_settings.EvaluationForm(tests=str(frames / "test"), synthetic_arm=False,
                                                             copy_paste_arm=False), frames / "train", {})
    from engine.evaluation.curve_plan import DEFAULT_FRACTIONS, MAX_STEPS

    assert defaults.fractions == DEFAULT_FRACTIONS and defaults.seeds is None and defaults.max_steps == MAX_STEPS
    assert defaults.arms == {} and defaults.tests == {"test": frames / "test"} and defaults.threads is None
    assert defaults.subset_draws == 0 and defaults.subset_draw == 0
    # the curve over subset draws: the engine's setting, one seed a draw, a default folder of its own, draws.html
    form_draws = app_settings.EvaluationForm(tests=str(frames / "test"), synthetic_arm=False, copy_paste_arm=False,
                                             subset_draws=3)
    drawn = vm.curve_settings(form_draws, frames / "train", {})
    from engine.evaluation.subset_draws import SUMMARY_NAMES, draw_settings

    assert vm.DRAWS_REPORT_NAME in SUMMARY_NAMES  # the app names the page the engine writes (kept apart: no torch)
    assert drawn.subset_draws == 3 and draw_settings(drawn, 1).seeds == 1  # the engine's one seed a draw
    assert drawn.out == frames / "train-evaluation-draws"
    assert vm.report_path(form_draws, frames / "train") == frames / "train-evaluation-draws" / "draws.html"
    form_draws.seeds = 2
    assert draw_settings(vm.curve_settings(form_draws, frames / "train", {}), 1).seeds == 2
    # the mixed arm alone brings the two arms it draws on (their job files as above), and the dialog shows it
    mixed = vm.curve_settings(app_settings.EvaluationForm(tests=str(frames / "test"), synthetic_arm=False,
                                                          copy_paste_arm=False, mixed_arm=True),
                              frames / "train", window.job_values())
    assert mixed.arm_names() == ["real", "copy-paste", "synthetic-judged", "judged-and-copy-paste"]
    assert mixed.mixes == {"judged-and-copy-paste": ("copy-paste", "synthetic-judged")} and not mixed.arm_ratios
    assert read_job_file(mixed.arms["synthetic-judged"]) == judged
    # what cannot run is one line naming the file or field
    with pytest.raises(InputError, match="test folder not found"):
        vm.curve_settings(app_settings.EvaluationForm(tests=str(tmp_path / "nope")), frames / "train", {})
    with pytest.raises(InputError, match="fractions: 1.5 must be in"):
        vm.curve_settings(app_settings.EvaluationForm(tests=str(frames / "test"), fractions="1.5"),
                          frames / "train", {})
    panel.mode.setCurrentIndex(panel.mode.findData("transplant"))  # the mask source follows to the frames' own
    assert panel.mask_source.currentData() == "user"
    panel.mask_source.setCurrentIndex(panel.mask_source.findData("random"))  # set back by hand: refused
    with pytest.raises(InputError, match=r"synthetic\.toml: .*mask_source user, not 'random'") as refused:
        vm.curve_settings(form, frames / "train", window.job_values())
    assert str(out / "jobs" / "synthetic.toml") in str(refused.value)


def test_the_dialog_remembers_its_form_and_shows_errors_naming_the_file(window, frames, tmp_path, messages):
    dialog = _dialog(window, frames, tmp_path, arms=("copy-paste",), seeds=2)
    dialog.normals.setText(str(frames / "normal"))
    dialog.subset_draws.setValue(4)
    assert dialog.output.placeholderText() == str(frames / "train-evaluation-draws")  # the default follows
    dialog.close()
    remembered = app_settings.EvaluationForm.load(window.settings)
    assert remembered.subset_draws == 4
    assert remembered.tests == f"test={frames / 'test'}" and remembered.normals == str(frames / "normal")
    assert remembered.output == str(tmp_path / "eval") and remembered.fractions == "0.25"
    assert (remembered.seeds, remembered.max_steps, remembered.threads) == (2, 20, 1)
    assert (remembered.synthetic_arm, remembered.copy_paste_arm, remembered.transplant_arm) == (False, True, False)
    dialog.output.setText(str(frames / "train-evaluation-draws"))  # the default is not remembered as a folder
    dialog.save_form()
    assert app_settings.EvaluationForm.load(window.settings).output == ""
    # a test folder that shares frames with the training frames: the engine's leak check, as a message
    dialog.tests.setPlainText(str(frames / "train"))
    with qtbot_wait(window.evaluation.failed):
        dialog.plan_button.click()
    (text,) = messages.texts()
    assert text.startswith("The evaluation stopped: cannot use this input: ")
    assert "real training frame(s) are also test frames (same bytes), e.g. sample_000.png = test sample_000.png" in text
    assert "Traceback" not in text and "Stopped by an error" in dialog.status.full_text()
    dialog.tests.setPlainText(str(tmp_path / "missing"))
    assert not dialog.start()
    assert f"{tmp_path / 'missing'}: test folder not found" in messages.texts()[-1]


class qtbot_wait:
    """Wait for a signal while processing events (the worker's result comes back on the GUI thread)."""

    def __init__(self, signal, timeout: float = RUN_TIMEOUT):
        self.signal, self.timeout, self.args = signal, timeout, None

    def __enter__(self):
        self.signal.connect(self._record)
        return self

    def _record(self, *args):
        self.args = args

    def __exit__(self, *exc):
        if exc[0] is None:
            assert wait_until(lambda: self.args is not None, self.timeout), "the signal never came"
        self.signal.disconnect(self._record)
        return False


def test_plan_shows_the_engines_plan(window, frames, tmp_path, messages):
    dialog = _dialog(window, frames, tmp_path)
    with qtbot_wait(window.evaluation.planReady):
        assert dialog.plan()
        assert not dialog.start_button.isEnabled() and not dialog.plan_button.isEnabled()
    plan = dialog.plan_text.toPlainText()
    assert plan.startswith("plan: 1 fraction(s) (0.25) × 1 arm(s) (real) × 1 seed(s) = 1 runs")
    assert "s per step measured here (1 thread(s)) → at most" in plan and "0 run(s) done earlier" in plan
    assert dialog.start_button.isEnabled() and messages.messages == []


def test_a_tiny_evaluation_from_the_dialog_finishes_and_opens_its_report(window, frames, tmp_path, messages,
                                                                         monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile()) or True))
    dialog = _dialog(window, frames, tmp_path, arms=("copy-paste",))
    assert not dialog.report_button.isEnabled()  # no report in that folder yet
    seen = []
    window.evaluation.progressChanged.connect(lambda event: seen.append((event.steps_done, dialog.bar.value())))
    dialog.fresh.setChecked(True)  # start over: once, never remembered
    with qtbot_wait(window.evaluation.finished) as finished:
        assert dialog.start()
        assert dialog.cancel_button.isEnabled() and not dialog.form_box.isEnabled()
        assert window.evaluation.settings.fresh and not dialog.fresh.isChecked()
    out = tmp_path / "eval"
    html = out / "report.html"
    assert Path(finished.args[0]["html"]) == html and html.is_file() and opened == [str(html)]
    assert dialog.bar.value() == dialog.bar.maximum() and seen and max(s for s, _ in seen) == 40
    assert any(0 < bar < dialog.bar.maximum() for _, bar in seen)  # it moved on the way
    assert sorted(p.name for p in (out / "results" / "0.25").iterdir()) == ["copy-paste-seed0.json", "real-seed0.json"]
    record = json.loads((out / "results" / "0.25" / "copy-paste-seed0.json").read_text())
    assert 0 < record["synthetic_frames"] <= record["real_frames"] == 8 and record["steps"] <= 20
    assert (out / "jobs" / "copy-paste.toml").is_file() and (out / "synthetic" / "0.25" / "copy-paste").is_dir()
    log = dialog.log.toPlainText()
    assert "copy-paste at fraction 0.25: generated into" in log and "plan: 1 fraction(s)" in log
    assert "Finished" in dialog.status.full_text() and messages.messages == []
    assert not dialog.cancel_button.isEnabled() and dialog.start_button.isEnabled()
    assert dialog.report_button.isEnabled()
    dialog.report_button.click()  # "Open report" opens the existing one
    assert opened == [str(html), str(html)]


def test_the_curve_over_subset_draws_from_the_dialog_opens_its_comparison(window, frames, tmp_path, messages,
                                                                          monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile()) or True))
    dialog = _dialog(window, frames, tmp_path, arms=("copy-paste",), seeds=0)
    assert dialog.seeds.specialValueText().startswith("default (5 at fractions")  # the lab's rule for one subset
    dialog.subset_draws.setValue(2)
    assert dialog.seeds.specialValueText() == "default (1 a draw)"  # what an empty Seeds means over draws
    with qtbot_wait(window.evaluation.finished) as finished:
        assert dialog.start()
    out = tmp_path / "eval"
    html = out / "draws.html"
    assert Path(finished.args[0]["html"]) == html and html.is_file() and opened == [str(html)]
    assert dialog.report_file() == html
    for draw in (1, 2):  # one seed a draw
        results = sorted(p.name for p in (out / f"draw-{draw}" / "results" / "0.25").iterdir())
        assert results == ["copy-paste-seed0.json", "real-seed0.json"]
    log = dialog.log.toPlainText()
    assert "subset draw 2 of 2:" in log and "copy-paste vs real on test at fraction 0.25: " in log
    assert "Finished: 4 run(s)" in dialog.status.full_text() and messages.messages == []


def test_cancel_stops_it_and_start_again_resumes_it(window, frames, tmp_path, messages, monkeypatch):
    """Two runs (real, seeds 0 and 1); Cancel in the second after its checkpoint at step 10; Start again: the first
    run's results are reused, the second resumes from its checkpoint."""
    reached, release = threading.Event(), threading.Event()

    def hold(event):  # on the worker thread: wait for the GUI's Cancel at a known step
        if event.run == "0.25/real-seed1" and event.steps_done >= 33 and not reached.is_set():
            reached.set()
            release.wait(60)

    class HeldWorker(vm.EvaluationWorker):
        def __init__(self, work, parent=None):
            super().__init__(work, parent)
            self.progress.connect(hold, Qt.ConnectionType.DirectConnection)

    monkeypatch.setattr(vm, "EvaluationWorker", HeldWorker)
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile()) or True))
    dialog = _dialog(window, frames, tmp_path, seeds=2)
    out = tmp_path / "eval"
    with qtbot_wait(window.evaluation.cancelled):
        assert dialog.start()
        assert wait_until(reached.is_set, RUN_TIMEOUT)
        dialog.cancel_button.click()
        assert window.evaluation.state == "cancelling" and not dialog.cancel_button.isEnabled()
        release.set()
    assert "resume" in dialog.status.full_text() and "resumes when started again" in dialog.log.toPlainText()
    first = out / "results" / "0.25" / "real-seed0.json"
    assert first.is_file() and not (out / "results" / "0.25" / "real-seed1.json").exists()
    assert any((out / "runs" / "0.25" / "real-seed1" / "checkpoints").iterdir())
    assert messages.messages == []  # a cancel is no error
    assert (out / "report.html").is_file() and dialog.report_button.isEnabled()  # rebuilt after every finished run
    stamp = first.stat().st_mtime_ns
    dialog.log.clear()
    with qtbot_wait(window.evaluation.finished):
        assert dialog.start()
    log = dialog.log.toPlainText()
    assert "1 run(s) done earlier are reused" in log and "1 resume(s) from its checkpoint" in log
    assert "0.25/real-seed0: done earlier, reused" in log and "0.25/real-seed1: training on" in log
    assert first.stat().st_mtime_ns == stamp
    assert json.loads((out / "report.json").read_text())["runs_done"] == 2
    assert dialog.bar.value() == dialog.bar.maximum() and messages.messages == []
    assert opened == [str(out / "report.html")]  # opened when it finished, not when it was cancelled


def test_without_torch_the_dialog_says_what_to_install_and_the_app_keeps_working(window, frames, tmp_path, messages,
                                                                                monkeypatch):
    def missing():
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(vm, "import_torch_stack", missing)
    window.menu_actions.evaluate_action.trigger()
    dialog = window.evaluation_dialog
    assert wait_until(lambda: dialog.lab_note.isVisible(), 30)
    note = dialog.lab_note.text()
    assert note.startswith(vm.DEVELOPER_INSTALL) and "pip install -e '.[cpu,export,desktop]'" in note
    assert "(missing: torch)" in note and "Traceback" not in note
    assert not dialog.plan_button.isEnabled() and not dialog.start_button.isEnabled()
    assert messages.messages == []  # a note in the dialog, not an error box
    with pytest.raises(vm.EvaluationUnavailable, match="developer install"):
        window.evaluation.curve_settings(dialog.form(), frames / "train", {})
    # the rest of the app: a job still builds and the window's actions still answer
    dialog.close()
    assert window.run_button.isEnabled() and window.menu_actions.run_action.isEnabled()
    assert window.job.spec_from({**window.job_values(), "output": str(tmp_path / "out")}).mode == "add"
