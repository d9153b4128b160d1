"""Desktop app: the editor shows the open frame's caption from the captions file the job reads (with its
measured attributes), and the curator's edit is saved there atomically, where `--captions` finds it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt

from test_desktop_browse_edit import make_window, open_and_wait, samples  # noqa: F401  (fixtures)

from engine.dataset.captions import caption_for, read_caption_table, read_captions


def open_item(window, rel):
    item = next(i for i in window.dataset.model.items if i.frame.rel == rel)
    assert window.open_frame(item)
    return item


def set_captions_file(window, path):
    window.panel.captions.setText(str(path))
    window.panel.captions.editingFinished.emit()


def test_editor_shows_and_saves_the_frames_caption(make_window, samples, tmp_path, qtbot):  # noqa: F811
    import main

    captions = tmp_path / "captions.csv"
    assert main.main(["caption", "--input", str(samples), "--out", str(captions), "--quiet"]) == 0
    measured = read_captions(captions)
    window = make_window()
    open_and_wait(window, samples)
    panel = window.editor_page.caption_panel
    open_item(window, "sample_000.png")
    assert not panel.isEnabled() and "No captions file" in panel.status.text()

    set_captions_file(window, captions)
    assert panel.isEnabled()
    assert panel.edit.toPlainText() == measured["sample_000"]
    assert "row “sample_000” (measured)" in panel.status.text()
    attributes = json.loads(next(r for r in read_caption_table(captions).rows if r.key == "sample_000").extra["attributes"])
    assert attributes["colour"] in panel.attributes.text() and attributes["size"] in panel.attributes.text()
    assert not panel.save_button.isEnabled()

    # the curator edits the text and saves it
    panel.edit.setPlainText("The polyp is red, lobulated, large,\nat the bottom.")
    assert panel.save_button.isEnabled()
    qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)
    assert caption_for(read_captions(captions), "sample_000.png") == "The polyp is red, lobulated, large, at the bottom."
    row = next(r for r in read_caption_table(captions).rows if r.key == "sample_000")
    assert row.extra["source"] == "curator" and json.loads(row.extra["attributes"]) == attributes
    assert "edited by a curator" in panel.status.text() and not panel.save_button.isEnabled()
    others = {k: v for k, v in read_captions(captions).items() if k != "sample_000"}
    assert others == {k: v for k, v in measured.items() if k != "sample_000"}

    # a frame without a caption: typing one and going to the next frame saves it (as the mask is saved)
    open_item(window, "sample_001.png")
    assert panel.isEnabled() and panel.edit.toPlainText() == "" and "No caption for this frame" in panel.status.text()
    panel.edit.setPlainText("a normal wall, no polyp")
    window.step_frame(1)
    assert window.current_item.frame.rel == "sample_002.png"
    assert read_captions(captions)["sample_001"] == "a normal wall, no polyp"
    assert panel.edit.toPlainText() == measured["sample_002"]


def test_an_unreadable_captions_file_is_said_and_not_overwritten(make_window, samples, tmp_path):  # noqa: F811
    broken = tmp_path / "broken.csv"
    broken.write_text("frame,text\na,\n", encoding="utf-8")
    window = make_window()
    open_and_wait(window, samples)
    set_captions_file(window, broken)
    open_item(window, "sample_000.png")
    panel = window.editor_page.caption_panel
    assert not panel.isEnabled() and "broken.csv:2: no text for frame 'a'" in panel.status.text()
    assert broken.read_text() == "frame,text\na,\n"
