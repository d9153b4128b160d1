"""The clinical captions a CCIS ControlNet trains on (``main.py caption`` writes them): each polyp frame's caption
from the captions file, and the contrasting caption its sample grid shows beside it ("pale" ↔ "red")."""

from __future__ import annotations

from pathlib import Path

from engine.dataset.captions import caption_for, read_captions
from engine.errors import InputError
from engine.training.corpus import Corpus

# Words the sample grid swaps to show what the caption does ("pale" ↔ "red", "small" ↔ "large").
CONTRASTS = {"pale": "red", "red": "pale", "pink": "pale", "whitish": "red", "small": "large", "large": "small",
             "diminutive": "large"}


def frame_captions(corpus: Corpus, captions_path: Path, allow_uncaptioned: bool) -> dict[str, str]:
    """{frame rel: caption} for every training and held-out polyp frame; InputError naming the file when frames
    have none (unless ``allow_uncaptioned``: they train with the empty caption)."""
    captions = read_captions(captions_path)
    found, missing = {}, []
    for frame in corpus.train + corpus.held_out:
        if not frame.has_polyp:
            continue
        text = caption_for(captions, frame.rel)  # its relative path, else its stem
        if text is None:
            missing.append(frame.stem)
            text = ""
        found[frame.rel] = text
    if missing and not allow_uncaptioned:
        raise InputError(f"{captions_path}: no caption for {len(missing)} of {len(found)} polyp frames (e.g. "
                         f"{', '.join(missing[:3])}); run `main.py caption` on the same frames, or pass "
                         "--allow-uncaptioned to train those with the empty caption")
    return found


def contrasting_caption(caption: str) -> str:
    """The caption with its first colour/size word swapped for its contrast ("pale" → "red"); "" stays ""."""
    words = caption.split(" ")
    for index, word in enumerate(words):
        bare = word.strip(",.;").lower()
        if bare in CONTRASTS:
            words[index] = word.lower().replace(bare, CONTRASTS[bare])
            return " ".join(words)
    return caption
