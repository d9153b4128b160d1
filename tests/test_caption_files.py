"""Captions files: the reader takes what the one writer writes (CSV/TSV/JSONL), quoted line breaks included,
and a curator's edit of one frame's text rewrites the file atomically with everything else kept."""

from __future__ import annotations

import json
import os

import pytest

from engine.dataset.caption_writer import set_caption, write_captions
from engine.dataset.captions import caption_for, polyp_key, read_caption_table, read_captions
from engine.errors import InputError


def test_round_trip_in_every_format(tmp_path):
    rows = [{"frame": "train/a", "text": "The polyp is red,\n  smooth.", "attributes": {"colour": "red", "n": 1},
             "source": "measured"},
            {"frame": polyp_key("train/a", 1), "text": 'a "quoted" text, with commas', "attributes": {}, "source": "measured"}]
    for suffix in (".csv", ".tsv", ".jsonl"):
        path = write_captions(tmp_path / f"c{suffix}", rows)
        captions = read_captions(path)
        assert captions == {"train/a": "The polyp is red, smooth.", "train/a#1": 'a "quoted" text, with commas'}
        assert caption_for(captions, "train/a.jpg") == "The polyp is red, smooth."
        assert caption_for(captions, "val/a.png") is None  # "train/a" is a path key: a stem lookup does not find it
        table = read_caption_table(path)
        attributes = table.rows[0].extra["attributes"]
        assert (json.loads(attributes) if isinstance(attributes, str) else attributes) == {"colour": "red", "n": 1}
    assert (tmp_path / "c.csv").read_text().splitlines()[0] == "frame,text,attributes,source"


def test_quoted_line_breaks_and_per_polyp_keys_are_read(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('frame,text\na,"two\nlines"\nb#1,polyp one of b\n', encoding="utf-8")
    captions = read_captions(path)
    assert captions == {"a": "two\nlines", "b#1": "polyp one of b"}
    assert caption_for(captions, "b.png") is None  # a per-polyp row is never a frame's caption
    bad = tmp_path / "bad.csv"
    bad.write_text('frame,text\na,"never closed\n', encoding="utf-8")
    assert read_captions(bad) == {"a": "never closed"}  # csv reads to the end of the file


def test_a_curator_edit_changes_one_row_and_keeps_the_rest(tmp_path):
    path = write_captions(tmp_path / "c.csv", [
        {"frame": "a", "text": "one", "attributes": {"colour": "red"}, "vlm_text": "", "source": "measured", "captioner": "x"},
        {"frame": "b", "text": "two", "attributes": {"colour": "pale"}, "vlm_text": "v", "source": "measured", "captioner": "x"},
    ])
    before = path.read_text().splitlines()
    assert set_caption(path, "images/b.png", " a pale,\nflat lesion ") == "b"
    after = path.read_text().splitlines()
    assert after[:2] == before[:2]  # header and row a: the same bytes
    assert after[2] == 'b,"a pale, flat lesion","{""colour"":""pale""}",v,curator,x'
    assert read_captions(path)["b"] == "a pale, flat lesion"


def test_edits_in_other_layouts(tmp_path):
    headerless = tmp_path / "h.csv"
    headerless.write_text("a,one\ntrain/b.jpg,two\n", encoding="utf-8")
    assert set_caption(headerless, "train/b.jpg", "new") == "train/b"
    assert read_captions(headerless) == {"a": "one", "train/b": "new"}
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"stem": "a", "caption": "pale", "score": 3}\n', encoding="utf-8")
    assert set_caption(jsonl, "val/a.png", "red") == "a"  # found by its stem
    assert json.loads(jsonl.read_text()) == {"stem": "a", "caption": "red", "score": 3, "source": "curator"}
    fresh = tmp_path / "new.tsv"
    assert set_caption(fresh, "x/y.png", "first") == "x/y"
    assert fresh.read_text() == "frame\ttext\tsource\nx/y\tfirst\tcurator\n"
    with pytest.raises(InputError, match="cannot be empty"):
        set_caption(fresh, "x/y.png", "  \n ")


def test_an_edit_that_cannot_be_written_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = write_captions(tmp_path / "c.csv", [{"frame": "a", "text": "one"}])
    before = path.read_bytes()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        set_caption(path, "a", "two")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.csv"]


def test_writer_refuses_rows_without_frame_or_text(tmp_path):
    with pytest.raises(InputError, match="row 2 needs a frame and a text"):
        write_captions(tmp_path / "c.csv", [{"frame": "a", "text": "x"}, {"frame": "b", "text": " "}])
    with pytest.raises(InputError, match="must be .csv, .tsv or .jsonl"):
        write_captions(tmp_path / "c.xlsx", [{"frame": "a", "text": "x"}])
