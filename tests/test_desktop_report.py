"""Desktop: after a job, "Quality report" makes the report on a worker thread (the window stays live) and
opens report.html; a report that cannot be made is a message naming the folder."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from desktop.testing import temporary_settings, wait_until
from engine.samples import generate_sample_set

JOB_TIMEOUT_MS = 60_000



@pytest.fixture()
def window(qtbot, tmp_path, monkeypatch, messages):
    monkeypatch.setenv("POLYPFORGE_SETTINGS", str(tmp_path / "settings.ini"))
    from desktop.views.main_window import MainWindow

    generate_sample_set(tmp_path / "frames", count=4, seed=5, width=192, height=160)
    win = MainWindow(temporary_settings(tmp_path))
    qtbot.addWidget(win)
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
    yield win
    win.run_page.report_tasks.wait(60_000)
    win.shutdown()


def _run_job(window, qtbot):
    page = window.run_page
    assert not page.report_button.isEnabled()  # nothing to report on before a job
    with qtbot.waitSignal(window.job.jobDone, timeout=JOB_TIMEOUT_MS) as done:
        assert window.run_job()
        assert not page.report_button.isEnabled()
    assert done.args[0].ok == 8
    assert page.report_button.isEnabled() and page.report_button.text() == "Quality report"
    return page


def test_quality_report_button_makes_and_opens_the_report(window, qtbot, tmp_path, messages):
    page = _run_job(window, qtbot)
    opened = []
    page.open_url = lambda url: opened.append(url.toLocalFile()) or True
    with qtbot.waitSignal(page.reportReady, timeout=60_000) as ready:
        page.report_button.click()
        # the click returns at once: the report is made on the worker thread
        assert not page.report_button.isEnabled() and "Making" in page.report_button.text()
    html = tmp_path / "out" / "quality_report" / "report.html"
    assert ready.args[0] == str(html) and opened == [str(html)]
    data = json.loads((html.parent / "report.json").read_text())
    assert data["overall"]["n_real"] == 4 and data["overall"]["n_synthetic"] == 8
    assert data["memorisation"]["own_source_excluded"] == 8  # the job's input frames are the real set
    assert {b["by"] for b in data["breakdown"]} == {"mask_source", "mode", "bundle"}
    assert "data:image/png;base64," in html.read_text()
    assert page.report_button.isEnabled() and page.report_button.text() == "Quality report"
    assert messages.messages == []


def test_a_report_that_cannot_be_made_is_a_message(window, qtbot, tmp_path, messages):
    page = _run_job(window, qtbot)
    shutil.rmtree(tmp_path / "frames")  # the input frames are gone
    opened = []
    page.open_url = lambda url: opened.append(url) or True
    with qtbot.waitSignal(page.reportFailed, timeout=30_000) as failed:
        page.report_button.click()
    assert str(tmp_path / "frames") in failed.args[0]
    assert messages.texts() and str(tmp_path / "frames") in messages.texts()[0]
    assert opened == [] and page.report_button.isEnabled()
