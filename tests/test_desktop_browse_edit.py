"""Desktop app: open a folder, see its frames (filters, thumbnails), draw masks with the tools and find
them saved where the batch job reads them; settings are remembered; a bad folder is a message box."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt

from desktop.imaging import qimage_to_array
from desktop.settings import JobSettings
from desktop.testing import temporary_settings, wait_until
from engine.dataset.discovery import discover
from engine.samples import generate_sample_set



@pytest.fixture()
def make_window(qtbot, tmp_path, monkeypatch, messages):
    monkeypatch.setenv("POLYPFORGE_SETTINGS", str(tmp_path / "settings.ini"))
    from desktop.views.main_window import MainWindow

    def make():
        window = MainWindow(temporary_settings(tmp_path))
        qtbot.addWidget(window)
        window.resize(1280, 800)
        window.show()
        return window

    return make


@pytest.fixture()
def samples(tmp_path):
    generate_sample_set(tmp_path / "frames", count=8, seed=3)
    return tmp_path / "frames"


def wait_for_thumbnail(dataset, row):
    from desktop.viewmodels.dataset import THUMB_ROLE

    index = dataset.proxy.index(row, 0)
    assert wait_until(lambda: index.data(THUMB_ROLE) is not None, 20)
    return index.data(THUMB_ROLE)


def open_and_wait(window, folder):
    window.open_folder(str(folder))
    assert wait_until(lambda: window.dataset.sources is not None and not window.dataset.loading, 20)


def test_open_folder_lists_frames_with_filters_and_thumbnails(make_window, samples):
    window = make_window()
    open_and_wait(window, samples)
    dataset, browser = window.dataset, window.browser
    assert dataset.model.rowCount() == 8
    assert [item.frame.rel for item in browser.visible_items()] == [f"sample_{i:03d}.png" for i in range(8)]
    assert "8 of 8 frames" in browser.count_label.text()

    browser.polyp_filter.setCurrentIndex(browser.polyp_filter.findData("with"))
    assert {i.frame.rel for i in browser.visible_items()} == {f"sample_{i:03d}.png" for i in (0, 2, 4, 6)}
    browser.polyp_filter.setCurrentIndex(browser.polyp_filter.findData("without"))
    assert len(browser.visible_items()) == 4 and all(i.frame.mask_path is None for i in browser.visible_items())
    browser.split_filter.setCurrentIndex(browser.split_filter.findData("val"))
    assert browser.visible_items() == []
    browser.polyp_filter.setCurrentIndex(0)
    browser.split_filter.setCurrentIndex(0)

    # thumbnails load off the GUI thread, with the mask outlined in green
    from desktop.viewmodels.dataset import THUMB_ROLE

    index = dataset.proxy.index(0, 0)
    assert wait_until(lambda: index.data(THUMB_ROLE) is not None, 20)
    image = index.data(THUMB_ROLE)
    assert not image.isNull() and image.width() <= 160 and image.height() <= 128
    pixels = qimage_to_array(image)
    assert ((pixels[..., 1] > 200) & (pixels[..., 0] < 80)).any(), "no green mask outline"
    plain = qimage_to_array(wait_for_thumbnail(dataset, 1))  # sample_001: no mask, no outline
    assert not ((plain[..., 1] > 200) & (plain[..., 0] < 80)).any()


def test_unreadable_frame_is_a_placeholder_and_a_message_when_opened(make_window, samples, messages):
    (samples / "images" / "broken.png").write_bytes(b"not a png at all")
    window = make_window()
    open_and_wait(window, samples)
    from desktop.viewmodels.dataset import ERROR_ROLE, THUMB_ROLE

    row = [i.frame.rel for i in window.dataset.model.items].index("broken.png")
    index = window.dataset.model.index(row)
    assert wait_until(lambda: index.data(THUMB_ROLE) is not None, 20)
    assert index.data(THUMB_ROLE).isNull() and "broken.png" in index.data(ERROR_ROLE)
    assert window.open_frame(window.dataset.model.items[row]) is False
    assert any("broken.png" in text for text in messages.texts())


def test_a_bad_mask_or_label_file_opens_the_frame_with_the_problem_shown(make_window, samples, messages):
    """The frame opens with an empty mask and no labels; each unreadable file is a message naming it."""
    (samples / "masks" / "sample_000.png").write_bytes(b"not a png at all")
    window = make_window()
    open_and_wait(window, samples)
    item = next(i for i in window.dataset.model.items if i.frame.rel == "sample_000.png")
    item.frame.yolo_path = samples / "sample_000.txt"
    item.frame.yolo_path.write_text("0 0.5 0.5 two-and-a-half 0.2\n")
    opened = window.dataset.read_for_editing(item)
    assert opened.frame.shape == (256, 320, 3) and opened.mask is None and opened.labels == []
    assert "sample_000.png" in str(opened.mask_problem) and "sample_000.txt" in str(opened.labels_problem)
    assert window.open_frame(item) is True
    assert window.editor.active and not window.editor.mask.any()
    texts = messages.texts()
    assert any("sample_000.png" in t and "empty mask" in t for t in texts) and any("sample_000.txt" in t for t in texts)


def to_widget(canvas, x, y) -> QPoint:
    return canvas.to_widget(QPointF(x, y)).toPoint()


def test_draw_with_every_tool_undo_redo_and_save_where_the_job_reads_it(make_window, samples, qtbot):
    window = make_window()
    open_and_wait(window, samples)
    item = next(i for i in window.dataset.model.items if i.frame.rel == "sample_001.png")  # no mask yet
    assert item.frame.mask_path is None
    assert window.open_frame(item)
    canvas, editor = window.editor_page.canvas, window.editor
    qtbot.waitUntil(lambda: canvas.image_rect().width() > 100)
    assert editor.frame.shape[:2] == (256, 320) and not editor.mask.any()

    # rectangle (keyboard shortcut R selects the tool)
    window.editor_page.tool_actions["rectangle"].trigger()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=to_widget(canvas, 20, 30))
    qtbot.mouseMove(canvas, to_widget(canvas, 60, 60))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=to_widget(canvas, 80, 90))
    assert editor.mask[40:80, 25:75].all() and not editor.mask[100:, :].any()

    # brush stroke
    window.editor_page.tool_actions["brush"].trigger()
    window.editor_page.size_slider.setValue(6)
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=to_widget(canvas, 150, 150))
    qtbot.mouseMove(canvas, to_widget(canvas, 200, 150))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=to_widget(canvas, 250, 150))
    assert editor.mask[150, 150:250].all() and not editor.mask[170, 200]

    # eraser across the rectangle
    window.editor_page.tool_actions["eraser"].trigger()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=to_widget(canvas, 50, 20))
    qtbot.mouseMove(canvas, to_widget(canvas, 50, 60))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=to_widget(canvas, 50, 100))
    assert not editor.mask[60, 50] and editor.mask[60, 30]

    # polygon: three clicks, Enter closes it
    window.editor_page.tool_actions["polygon"].trigger()
    for x, y in ((200, 190), (260, 190), (230, 240)):
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=to_widget(canvas, x, y))
    qtbot.keyClick(canvas, Qt.Key.Key_Return)
    assert editor.mask[205, 230] and not editor.mask[235, 205]

    drawn = editor.mask.copy()
    editor.undo()
    assert not editor.mask[205, 230]
    editor.redo()
    assert np.array_equal(editor.mask, drawn)
    editor.clear()
    assert not editor.mask.any()
    editor.undo()
    assert np.array_equal(editor.mask, drawn)

    path = window.save_mask()
    assert path == samples / "masks" / "sample_001.png"  # Kvasir layout: masks/<stem>.png
    saved = np.array(Image.open(path))
    assert saved.ndim == 2 and set(np.unique(saved)) <= {0, 255}
    assert np.array_equal(saved > 127, drawn)
    # the batch job pairs it with its frame
    frame = next(f for f in discover(samples).frames if f.rel == "sample_001.png")
    assert frame.mask_path == path
    assert item.has_polyp and "mask" in [b for b, _ in window.browser.view.itemDelegate().badges(
        window.dataset.model.index(window.dataset.model.items.index(item)))]


def test_plain_folder_masks_go_to_masks_relative_path_and_jpeg_mask_is_kept_aside(make_window, tmp_path):
    plain = tmp_path / "plain"
    (plain / "val" / "case1").mkdir(parents=True)
    frame = np.full((60, 80, 3), 120, np.uint8)
    Image.fromarray(frame).save(plain / "val" / "case1" / "f1.jpg")
    window = make_window()
    open_and_wait(window, plain)
    item = window.dataset.model.items[0]
    assert item.frame.split == "val"
    assert window.open_frame(item)
    window.editor.fill_rect(10, 10, 30, 30)
    path = window.save_mask()
    assert path == plain / "masks" / "val" / "case1" / "f1.png"
    assert discover(plain).frames[0].mask_path == path
    assert window.dataset.masks_dir == plain / "masks"

    # Kvasir ships .jpg masks: the drawn PNG replaces it for the job, the JPEG is kept as .bak
    kvasir = tmp_path / "kvasir"
    (kvasir / "images").mkdir(parents=True)
    (kvasir / "masks").mkdir()
    Image.fromarray(frame).save(kvasir / "images" / "k1.jpg")
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(kvasir / "masks" / "k1.jpg")
    open_and_wait(window, kvasir)
    item = window.dataset.model.items[0]
    assert window.open_frame(item)
    window.editor.fill_polygon([(5, 5), (40, 5), (20, 40)])
    path = window.save_mask()
    assert path == kvasir / "masks" / "k1.png"
    assert (kvasir / "masks" / "k1.jpg.bak").exists() and not (kvasir / "masks" / "k1.jpg").exists()
    assert discover(kvasir).frames[0].mask_path == path


def test_settings_are_remembered_in_the_temporary_settings_file(make_window, samples, tmp_path):
    window = make_window()
    panel = window.panel
    panel.mode.setCurrentIndex(panel.mode.findData("remove"))
    panel.mask_source.setCurrentIndex(panel.mask_source.findData("box"))
    panel.variants.setValue(3)
    panel.steps.setValue(7)
    panel.guidance.setValue(4.5)
    panel.seed.setValue(42)
    panel.inpaint_area.setCurrentIndex(panel.inpaint_area.findData("region"))
    panel.region_padding.setValue(24)
    panel.working_size.setValue(96)
    panel.formats["yolo-seg"].setChecked(False)
    panel.output.setText(str(tmp_path / "out"))
    open_and_wait(window, samples)
    window.close()
    assert (tmp_path / "polypforge-settings.ini").is_file()

    again = make_window()
    s = again.panel.settings()
    assert (s.mode, s.mask_source, s.variants, s.steps, s.guidance, s.seed) == ("remove", "box", 3, 7, 4.5, 42)
    assert s.formats == ["coco", "yolo"] and s.output == str(tmp_path / "out")
    assert (s.inpaint_area, s.region_padding, s.working_size) == ("region", 24, 96)
    values = s.spec_values(samples, None)
    assert (values["inpaint_area"], values["region_padding"], values["working_size"]) == ("region", 24, 96)
    assert wait_until(lambda: again.dataset.sources is not None, 20)  # the last folder reopens
    assert again.dataset.input_dir == samples
    assert JobSettings.load(again.settings).variants == 3


def test_bad_folder_and_empty_folder_are_messages(make_window, tmp_path, messages):
    window = make_window()
    window.open_folder(str(tmp_path / "does-not-exist"))
    assert wait_until(lambda: messages.texts(), 10)
    assert "does-not-exist" in messages.texts()[-1] and "not found" in messages.texts()[-1]
    (tmp_path / "empty").mkdir()
    window.open_folder(str(tmp_path / "empty"))
    assert wait_until(lambda: len(messages.texts()) == 2, 10)
    assert "no frames found" in messages.texts()[-1]
    assert window.dataset.sources is None
    assert window.run_job() is False and "Open a folder of frames" in messages.texts()[-1]


def test_retrieval_panel_disabled_with_a_note_when_the_proposer_is_missing(make_window, monkeypatch):
    from desktop.viewmodels import retrieval

    monkeypatch.setattr(retrieval, "import_retrieval", lambda: (None, retrieval.NOT_INSTALLED, "ImportError"))
    window = make_window()
    box = window.editor_page.retrieval_status.parentWidget()
    assert not box.isEnabled()
    assert window.editor_page.retrieval_status.text() == "retrieval proposer not installed"


def test_thousands_of_frames_load_only_the_thumbnails_on_screen(make_window, tmp_path, qtbot):
    folder = tmp_path / "many"
    folder.mkdir()
    tile = Image.fromarray(np.full((24, 32, 3), 150, np.uint8))
    for i in range(2000):
        tile.save(folder / f"f{i:04d}.png", compress_level=0)
    window = make_window()
    started = time.monotonic()
    open_and_wait(window, folder)
    assert window.dataset.model.rowCount() == 2000
    loader = window.dataset.loader
    assert wait_until(lambda: len(loader._cache) > 0 and loader.idle(), 20)
    assert time.monotonic() - started < 15
    first_screen = len(loader._cache)
    assert 0 < first_screen < 200, first_screen  # what is visible (and a little more), not 2000
    assert "f1999.png" not in loader._cache
    window.browser.view.scrollToBottom()  # the view asks for what it now paints: the last frames
    assert wait_until(lambda: "f1999.png" in loader._cache and loader.idle(), 20)
    assert len(loader._cache) < 2 * first_screen + 50


def test_retrieval_proposals_are_drawn_on_the_frame_and_can_become_the_mask(make_window, samples, retrieval_db, qtbot):
    window = make_window()
    open_and_wait(window, samples)
    page = window.editor_page
    assert page.retrieval_status.parentWidget().isEnabled()
    with qtbot.waitSignal(window.retrieval.opened, timeout=20_000):
        window.retrieval.open_database(retrieval_db)
    assert window.open_frame(window.dataset.model.items[1])
    assert wait_until(lambda: window.retrieval.proposals, 20)
    assert page.canvas.proposals and page.proposal_list.count() == len(window.retrieval.proposals)
    page.proposal_list.setCurrentRow(0)
    page.use_proposal.click()
    expected = window.retrieval.proposals[0].mask(*window.editor.shape)
    assert np.array_equal(window.editor.mask, expected) and expected.any()
    assert window.settings.value("retrieval/db") == str(retrieval_db)
    if window.retrieval.explain is not None:
        page.show_explain()
        assert page.explain_dialog.isVisible()
        page.explain_dialog.close()


def test_run_app_opens_the_window_and_returns_when_it_closes(qtbot, tmp_path, monkeypatch):
    import sys
    import threading

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from desktop.app import run_app
    from desktop.views.main_window import MainWindow

    monkeypatch.setenv("POLYPFORGE_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    seen = []

    def close_it():
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        seen.extend(windows)
        for window in windows:
            window.close()
        if not windows:
            QApplication.quit()

    QTimer.singleShot(300, close_it)
    assert run_app([]) == 0
    assert len(seen) == 1 and seen[0].windowTitle() == "PolypForge"
    assert (tmp_path / "settings.ini").is_file()  # the window's settings went to the temporary file


def test_no_display_is_a_message_not_an_abort(monkeypatch, capsys):
    from desktop import app

    monkeypatch.setattr(app.sys, "platform", "linux")
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    assert app.no_display()
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert not app.no_display()


def test_saving_a_mask_moves_the_frame_out_of_the_without_polyp_filter(make_window, samples):
    window = make_window()
    open_and_wait(window, samples)
    browser = window.browser
    browser.polyp_filter.setCurrentIndex(browser.polyp_filter.findData("without"))
    before = [i.frame.rel for i in browser.visible_items()]
    assert "sample_003.png" in before
    assert window.open_frame(next(i for i in browser.visible_items() if i.frame.rel == "sample_003.png"))
    window.editor.fill_rect(100, 100, 140, 140)
    window.editor_page.navigate.emit(1)  # leaving the frame saves its mask
    assert (samples / "masks" / "sample_003.png").is_file()
    after = [i.frame.rel for i in browser.visible_items()]
    assert "sample_003.png" not in after and len(after) == len(before) - 1
    assert window.current_item is not None and window.current_item.frame.rel == "sample_005.png"
