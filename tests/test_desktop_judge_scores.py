"""The review gallery shows each variant's judge score (batch job --judge) and sorts by it."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import main
from engine.jobs.spec import shipped_bundles_folder
from engine.samples import generate_sample_set
from judge_helpers import random_judge


def test_gallery_shows_and_sorts_by_judge_score(qtbot, tmp_path):
    from desktop.viewmodels.review import ITEM_ROLE, SORT_ORDERS, ReviewController
    from desktop.views.gallery import ReviewPage, VariantDelegate, _judge_text

    generate_sample_set(tmp_path / "frames", count=3, seed=2, with_polyps_every=1)
    judge = random_judge(tmp_path / "judge")
    output = tmp_path / "out"
    assert main.main(["--batch", "--quiet", "--input", str(tmp_path / "frames"), "--output", str(output),
                      "--variants", "2", "--steps", "2", "--judge", str(judge), "--min-judge-score", "0",
                      "--model", str(shipped_bundles_folder() / "demo-sd-inpaint")]) == 0
    review = ReviewController()
    page = ReviewPage(review)
    qtbot.addWidget(page)
    review.load(output)
    order = [item.key for item in review.model.items]
    scores = [item.judge_score for item in review.model.items]
    assert None not in scores and len(set(scores)) > 1
    page.sort_box.setCurrentIndex(SORT_ORDERS.index("judge score, lowest first"))
    assert [item.judge_score for item in review.model.items] == sorted(scores)
    page.sort_box.setCurrentIndex(SORT_ORDERS.index("judge score, highest first"))
    assert [item.judge_score for item in review.model.items] == sorted(scores, reverse=True)
    page.sort_box.setCurrentIndex(0)
    assert [item.key for item in review.model.items] == order
    index = review.model.index(0)
    badges = VariantDelegate(page.list.iconSize(), 0).badges(index)
    assert badges[1][0] == f"judge {index.data(ITEM_ROLE).judge_score:.2f}"
    assert "judge score" in _judge_text(index.data(ITEM_ROLE).record)
    from PySide6.QtCore import Qt

    assert "judge score" in review.model.data(index, Qt.ItemDataRole.ToolTipRole)
