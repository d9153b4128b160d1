"""The runtime tokenizer (tokenizers library, bundle's tokenizer.json) equals transformers' CLIPTokenizer as
diffusers calls it: padding to max_length, truncation, BOS/EOS."""

from __future__ import annotations

import numpy as np
import pytest

from engine.bundle import read_bundle
from engine.text.clip_tokenizer import PromptTokenizer

PROMPTS = [
    "Polyp",
    "Normal",
    "",
    "a small pale sessile polyp with smooth mucosa in the colon",
    "A LARGE Pedunculated   polyp, red; vessels!",
    "unknown words zxqv and unicode: café – 息肉",
    " ".join(["polyp"] * 120),  # far past 77 tokens: truncated, EOS kept last
]


@pytest.fixture(scope="module")
def runtime_tokenizer(tiny_bundle):
    bundle = read_bundle(tiny_bundle)
    info = bundle.manifest["tokenizer"]
    return PromptTokenizer(bundle.path_of("tokenizer"), info["max_length"], info["pad_token_id"], info["eos_token_id"])


def test_ids_equal_transformers_clip_tokenizer(runtime_tokenizer, tiny_pipeline_dir):
    from transformers import CLIPTokenizer

    reference = CLIPTokenizer.from_pretrained(str(tiny_pipeline_dir / "tokenizer"), local_files_only=True)
    ours = runtime_tokenizer(PROMPTS)
    theirs = reference(PROMPTS, padding="max_length", max_length=reference.model_max_length, truncation=True).input_ids
    assert ours.dtype == np.int64 and ours.shape == (len(PROMPTS), 77)
    for text, row_ours, row_theirs in zip(PROMPTS, ours.tolist(), theirs):
        assert row_ours == row_theirs, text


def test_long_prompt_is_counted(runtime_tokenizer):
    assert runtime_tokenizer.token_count(PROMPTS[-1]) > 77
    assert runtime_tokenizer(PROMPTS[-1:])[0, -1] == runtime_tokenizer.eos_token_id


def test_unreadable_tokenizer_is_named(tmp_path):
    from engine.errors import BundleError

    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(BundleError, match="tokenizer.json: not a readable tokenizer.json"):
        PromptTokenizer(bad, 77, 0, 1)
