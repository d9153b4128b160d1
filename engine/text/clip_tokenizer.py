"""CLIP prompt tokenisation from the bundle's local tokenizer.json, with the `tokenizers` library (no torch,
no transformers, no hub).

It reproduces what diffusers' pipelines ask of transformers' CLIPTokenizer: ``padding="max_length",
max_length=model_max_length, truncation=True`` — BOS, the BPE tokens, EOS, then the pad token up to
``max_length``; a prompt that is too long keeps its first ``max_length - 1`` tokens and ends with EOS.
Like the slow CLIPTokenizer (which diffusers loads) without ftfy, each CJK ideograph is its own word.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from engine.errors import BundleError

# CJK ideograph blocks: the slow CLIPTokenizer's basic tokenizer puts spaces around each such character.
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _split_cjk(text: str) -> str:
    if text.isascii():
        return text
    return "".join(f" {ch} " if any(lo <= ord(ch) <= hi for lo, hi in CJK_RANGES) else ch for ch in text)


class PromptTokenizer:
    def __init__(self, tokenizer_json: Path, max_length: int, pad_token_id: int, eos_token_id: int):
        self.path = Path(tokenizer_json)
        try:
            self._tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as exc:  # tokenizers raises a bare Exception for malformed files
            raise BundleError(self.path, f"not a readable tokenizer.json ({exc})") from None
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.max_length = int(max_length)
        self.pad_token_id = int(pad_token_id)
        self.eos_token_id = int(eos_token_id)

    def token_count(self, text: str) -> int:
        """Tokens of a prompt including BOS/EOS: above max_length the prompt is cut (the CLI warns)."""
        return len(self._tokenizer.encode(_split_cjk(text)).ids)

    def __call__(self, texts: list[str]) -> np.ndarray:
        rows = np.full((len(texts), self.max_length), self.pad_token_id, dtype=np.int64)
        for row, text in enumerate(texts):
            ids = self._tokenizer.encode(_split_cjk(text)).ids
            if len(ids) > self.max_length:
                ids = ids[: self.max_length - 1] + [self.eos_token_id]
            rows[row, : len(ids)] = ids
        return rows
