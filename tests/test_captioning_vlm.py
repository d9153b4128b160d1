"""`main.py caption --model`: a local vision-language model's text goes beside the measured text, never
instead of it; tested with a tiny random-weight BLIP built here (nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_captioning import folder  # noqa: F401  (the frames fixture)

from engine.dataset.captions import read_caption_table

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "polyp", "red", "pale", "mucosa", "smooth", "large", "small"]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    """A seeded random-weight BlipForConditionalGeneration with its processor, as save_pretrained writes it."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder = tmp_path_factory.mktemp("vlm") / "tiny-blip"
    folder.mkdir()
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(WORDS + [f"w{i}" for i in range(40)]) + "\n", encoding="utf-8")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=BertTokenizer(str(vocab), model_max_length=64))
    torch.manual_seed(0)
    config = BlipConfig(
        text_config={"vocab_size": len(WORDS) + 40, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": 2, "sep_token_id": 3,
                     "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def run_caption(*args) -> int:
    import main

    return main.main(["caption", *map(str, args), "--quiet"])


def test_vlm_text_is_written_beside_the_measured_text(folder, tiny_blip, tmp_path):  # noqa: F811
    measured, with_vlm = tmp_path / "measured.csv", tmp_path / "vlm.csv"
    assert run_caption("--input", folder, "--out", measured) == 0
    assert run_caption("--input", folder, "--out", with_vlm, "--model", tiny_blip) == 0
    plain, described = read_caption_table(measured), read_caption_table(with_vlm)
    assert [(r.frame, r.text) for r in described.rows] == [(r.frame, r.text) for r in plain.rows]
    assert all(r.extra["attributes"] == p.extra["attributes"] for r, p in zip(described.rows, plain.rows))
    vocabulary = set(WORDS) | {f"w{i}" for i in range(40)}
    for row in described.rows:
        words = row.extra["vlm_text"].split()
        assert words and set(words) <= vocabulary, row.extra["vlm_text"]
        assert "vlm tiny-blip sha256:" in row.extra["captioner"]
    assert all(r.extra["vlm_text"] == "" for r in plain.rows)
    # frame c has two polyps: its polyp rows are described from their own crops
    by_key = {r.key: r for r in described.rows}
    assert by_key["c"].extra["vlm_text"] == by_key["c#1"].extra["vlm_text"]
    again = tmp_path / "again.csv"
    assert run_caption("--input", folder, "--out", again, "--model", tiny_blip) == 0
    assert again.read_bytes() == with_vlm.read_bytes()  # greedy decoding: deterministic


def test_crops_follow_each_polyp():
    from engine.captioning.vlm import MIN_CROP_PX, polyp_crops

    frame = np.zeros((200, 300, 3), np.uint8)
    mask = np.zeros((200, 300), bool)
    mask[50:150, 100:220] = True  # large
    mask[10:20, 10:20] = True  # small, near the corner
    large, small = polyp_crops(frame, mask)
    assert large.shape[:2] == (150, 180)  # 100×120 box widened by 25 % each side
    assert small.shape[:2] == (min(MIN_CROP_PX, 15 + 32), min(MIN_CROP_PX, 15 + 32))


def test_model_folders_that_cannot_be_used_are_refused(folder, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "c.csv"
    assert run_caption("--input", folder, "--out", out, "--model", tmp_path / "absent") == 2
    assert "vision-language model folder not found" in capsys.readouterr().err
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "blip"}), encoding="utf-8")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    assert run_caption("--input", folder, "--out", out, "--model", pickled) == 2
    assert "loads no pickled (.bin) weights" in capsys.readouterr().err
    assert not out.exists()
