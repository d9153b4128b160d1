"""The word-level vocabulary of the compact CCIS ControlNet's text encoder (engine.models.compact_controlnet).

The compact model has no pretrained text encoder: its captions (``main.py caption``: a few dozen clinical words,
"pale pink, smooth, sessile ...") are tokenised by words. A word is a run of letters after lowercasing (anything
else separates words; digits are dropped, the captioner writes sizes in words). Id 0 is ``<pad>``, id 1 ``<unk>``
(a word the training captions never had), the known words follow in sorted order, so the same captions always
give the same vocabulary. A prompt becomes exactly ``max_length`` ids: its first ``max_length`` words, padded.
The empty caption is all ``<pad>`` (what classifier-free guidance contrasts with).

Training and the torch-free pipeline use this one class, so a prompt gives the same ids in both; the vocabulary
travels as JSON (``vocab.json``) with the model folder and inside the bundle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from engine.errors import BundleError

PAD, UNK = "<pad>", "<unk>"
MAX_LENGTH = 32
VOCAB_FORMAT = "polypforge-word-vocab"
_WORD = re.compile(r"[a-z]+")


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class WordTokenizer:
    def __init__(self, words: Iterable[str], max_length: int = MAX_LENGTH):
        self.words = [PAD, UNK] + [w for w in words if w not in (PAD, UNK)]
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("the vocabulary lists a word twice")
        self.max_length = int(max_length)

    @classmethod
    def from_texts(cls, texts: Iterable[str], max_length: int = MAX_LENGTH) -> "WordTokenizer":
        return cls(sorted({w for text in texts for w in words_of(text)}), max_length)

    @property
    def size(self) -> int:
        return len(self.words)

    def ids(self, text: str) -> list[int]:
        ids = [self.index.get(w, 1) for w in words_of(text)][: self.max_length]
        return ids + [0] * (self.max_length - len(ids))

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(len(texts), max_length) int64 token ids."""
        return np.array([self.ids(t) for t in texts], dtype=np.int64).reshape(len(texts), self.max_length)

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in words_of(text) if w not in self.index]

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        return {"format": VOCAB_FORMAT, "max_length": self.max_length, "words": self.words}

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=0) + "\n").encode("utf-8")

    @classmethod
    def from_file(cls, path: str | Path) -> "WordTokenizer":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != VOCAB_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {VOCAB_FORMAT}")
            words = list(data["words"])
            if words[:2] != [PAD, UNK]:
                raise ValueError(f"the vocabulary must start with {PAD}, {UNK}")
            return cls(words[2:], int(data["max_length"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BundleError(path, f"not a word vocabulary ({exc})") from None
