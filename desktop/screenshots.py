"""PNGs of the app's main states from a real run, so a person can look at the app without a display:

    python -m desktop.screenshots OUTDIR

Generated sample frames (engine.samples, no patient data), the embedded demo bundle (random weights: its
"polyps" are noise by design), a few steps. Runs offscreen unless QT_QPA_PLATFORM says otherwise, on a
temporary settings file (the curator's settings are not touched). Writes 01-browser … 06-error.png, and
07-retrieval.png when the retrieval proposer (engine.retrieval) is installed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

SIZE = (1360, 860)


def _composite(window, box, path: Path) -> None:
    """The window with a message box drawn over its centre, as the curator would see it."""
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QColor, QPainter

    picture = window.grab()
    dialog = box.grab()
    painter = QPainter(picture)
    painter.fillRect(picture.rect(), QColor(0, 0, 0, 70))
    corner = QPoint((picture.width() - dialog.width()) // 2, (picture.height() - dialog.height()) // 2)
    painter.fillRect(corner.x() + 6, corner.y() + 6, dialog.width(), dialog.height(), QColor(0, 0, 0, 90))
    painter.drawPixmap(corner, dialog)
    painter.end()
    picture.save(str(path))


def take(outdir: Path, work: Path) -> list[Path]:
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QMessageBox

    from desktop.app import create_app
    from desktop.testing import settle, temporary_settings, wait_until
    from engine.samples import generate_sample_set

    outdir.mkdir(parents=True, exist_ok=True)
    frames = work / "colonoscopy-frames"
    generate_sample_set(frames, count=12, seed=0)
    _app = create_app([])  # kept referenced for the whole run
    boxes = []

    def critical(parent, title, text, *args, **kwargs):  # shown without blocking, so it can be photographed
        box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok, parent)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        boxes.append(box)
        return QMessageBox.StandardButton.Ok

    QMessageBox.critical = staticmethod(critical)
    from desktop.views.main_window import MainWindow

    window = MainWindow(temporary_settings(work))
    window.resize(*SIZE)
    window.show()
    written: list[Path] = []

    def shot(name: str) -> None:
        settle(0.3)
        path = outdir / name
        window.grab().save(str(path))
        written.append(path)
        print(path)

    def check(condition: bool, what: str) -> None:
        if not condition:
            raise SystemExit(f"screenshots: {what}")

    # 1. browser
    window.open_folder(str(frames))
    check(wait_until(lambda: window.dataset.sources is not None and not window.bundles.busy(), 30), "folder did not open")
    check(wait_until(lambda: len(window.dataset.loader._cache) >= 12 and window.dataset.loader.idle(), 30),
          "thumbnails did not load")
    window.panel.output.setText(str(work / "generated-dataset"))
    shot("01-browser.png")

    # 2. editor: a polygon and a brush stroke drawn with the mouse on a frame that had no mask
    item = next(i for i in window.dataset.model.items if i.frame.rel == "sample_001.png")
    window.open_frame(item)
    canvas = window.editor_page.canvas
    settle(0.2)

    def at(x, y):
        return canvas.to_widget(QPointF(x, y)).toPoint()

    window.editor_page.tool_actions["polygon"].trigger()
    for x, y in ((70, 60), (125, 48), (150, 95), (118, 130), (72, 112)):
        QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(x, y))
    QTest.keyClick(canvas, Qt.Key.Key_Return)
    window.editor_page.tool_actions["brush"].trigger()
    window.editor_page.size_slider.setValue(9)
    QTest.mousePress(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(200, 170))
    for x in range(205, 246, 5):
        QTest.mouseMove(canvas, at(x, 170 + (x - 200) // 3))
    QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(245, 185))
    window.editor_page.tool_actions["polygon"].trigger()
    for x, y in ((250, 60), (290, 70), (280, 110)):  # a polygon in progress, to show how it looks
        QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(x, y))
    QTest.mouseMove(canvas, at(262, 118))
    check(window.editor.mask.any(), "nothing was drawn")
    shot("02-editor.png")
    canvas.cancel_shape()
    window.save_mask()

    # 3. running: user masks, 2 variants, enough steps to catch it mid-run
    panel = window.panel
    panel.mask_source.setCurrentIndex(panel.mask_source.findData("user"))
    panel.variants.setValue(2)
    panel.steps.setValue(12)
    check(window.run_job(), "the job did not start")
    check(wait_until(lambda: window.job.progress.ok >= 3 and window.job.progress.step >= 4, 120), "no progress")
    shot("03-running.png")

    # 4. finished
    check(wait_until(lambda: window.job.state == "done", 300), "the job did not finish")
    shot("04-finished.png")

    # 5. gallery: reject the first result (R), then look at the next
    window.tabs.setCurrentWidget(window.review_page)
    window.review_page.list.setFocus()
    settle(0.2)
    window.review_page.decide(False)
    check(wait_until(lambda: not window.review.busy(), 30), "review did not apply")
    window.review_page.move(-1)
    check(wait_until(lambda: window.review.loader.idle(), 30), "gallery thumbnails did not load")
    shot("05-gallery.png")

    # 6. an error: a folder that is not there
    window.tabs.setCurrentWidget(window.browser)
    window.open_folder(str(work / "no-such-folder"))
    check(wait_until(lambda: bool(boxes), 20), "no error message appeared")
    settle(0.3)
    path = outdir / "06-error.png"
    _composite(window, boxes[-1], path)
    written.append(path)
    print(path)
    boxes[-1].close()

    # 7. retrieval proposals on a frame (only when engine.retrieval is installed and works)
    if window.retrieval.available:
        try:
            _retrieval_shot(window, work, outdir, written)
        except Exception as exc:  # noqa: BLE001 - the retrieval issue is built in parallel
            print(f"screenshots: no retrieval picture ({type(exc).__name__}: {exc})", file=sys.stderr)

    window.shutdown()
    window.close()
    return written


def _retrieval_shot(window, work: Path, outdir: Path, written: list[Path]) -> None:
    import argparse
    import contextlib
    import io

    from desktop.testing import settle, wait_until
    from engine.cli.retrieval import register_commands
    from engine.samples import generate_sample_set

    generate_sample_set(work / "polyp-frames", count=8, seed=1, with_polyps_every=1)
    parser = argparse.ArgumentParser()
    handlers = register_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["db", "build", "--polyps", str(work / "polyp-frames"), "--to", str(work / "retrieval-db")])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if handlers["db"](args) != 0:
            raise RuntimeError("db build failed")
    window.retrieval.open_database(work / "retrieval-db")
    if not wait_until(lambda: window.retrieval.db_path is not None, 30):
        raise RuntimeError("database did not open")
    window.open_frame(next(i for i in window.dataset.model.items if i.frame.rel == "sample_003.png"))
    if not wait_until(lambda: bool(window.retrieval.proposals), 30):
        raise RuntimeError("no proposals")
    window.editor_page.proposal_list.setCurrentRow(0)
    settle(0.3)
    path = outdir / "07-retrieval.png"
    window.grab().save(str(path))
    written.append(path)
    print(path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m desktop.screenshots OUTDIR", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="polypforge-screenshots-") as work:
        take(Path(argv[0]).expanduser().resolve(), Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
