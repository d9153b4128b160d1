"""The measured attributes of every polyp of a training corpus, for the compact model trained with ``--attributes``.

Each frame with polyp masks is captioned once (engine.captioning.captioner on the frame as held in memory and the
union of its polyps' masks); each corpus polyp takes the attributes of the captioned polyp it overlaps most
(the captioner splits the mask into 8-connected components itself, largest first). A polyp known only by its box
has none (every attribute "not asked"). The result is cached in the run folder as ``attribute_captions.json``
(written to a temp file, then renamed over the old one), keyed by the frame's corpus path with the sha256 of its
pixels and masks: a resumed run reads it instead of captioning again, and a changed frame is captioned anew.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engine.captioning.captioner import MEASURE_VERSION, NoPolyp, caption_frame
from engine.captioning.conditioning import polyp_attributes
from engine.fileio import atomic_write_bytes
from engine.masks.instances import split_instances
from engine.training.corpus import CorpusFrame

CACHE_NAME = "attribute_captions.json"
SAVE_EVERY = 200  # frames captioned between cache writes (a killed run keeps what it measured)

PolypAttributes = dict[str, str | None]


def frame_digest(frame: CorpusFrame) -> str:
    digest = hashlib.sha256(f"{frame.image.shape}".encode())
    digest.update(np.ascontiguousarray(frame.image).tobytes())
    for mask in frame.instance_masks:
        digest.update(b"-" if mask is None else np.packbits(mask).tobytes())
    return digest.hexdigest()


def caption_polyps(frame: CorpusFrame) -> list[PolypAttributes | None]:
    """Per polyp of the frame (its order in ``frame.boxes``): its attributes, or None without a pixel mask."""
    masks = [m for m in frame.instance_masks if m is not None]
    if not masks:
        return [None] * len(frame.boxes)
    union = np.zeros(frame.image.shape[:2], bool)
    for mask in masks:
        union |= mask
    try:
        caption = caption_frame(frame.image, union)
    except NoPolyp:
        return [None] * len(frame.boxes)
    components = split_instances(union)  # the captioner's polyps, in its order
    result: list[PolypAttributes | None] = []
    for mask in frame.instance_masks:
        if mask is None or not components:
            result.append(None)
            continue
        overlaps = [int((mask & component).sum()) for component in components]
        best = int(np.argmax(overlaps))
        result.append(polyp_attributes(caption.polyps[best].attributes) if overlaps[best] > 0 else None)
    return result


def corpus_attributes(frames: list[CorpusFrame], cache: Path | None = None,
                      log: Callable[[str], None] = print) -> dict[str, list[PolypAttributes | None]]:
    """Frame rel → its polyps' attributes, for every polyp frame given; read from ``cache`` where it holds the
    frame unchanged, captioned (and written back to it) otherwise."""
    stored: dict = {}
    if cache is not None and cache.is_file():
        try:
            data = json.loads(cache.read_text(encoding="utf-8"))
            if data.get("captioner") == MEASURE_VERSION:
                stored = dict(data.get("frames", {}))
        except (OSError, ValueError, AttributeError):
            stored = {}
    result: dict[str, list[PolypAttributes | None]] = {}
    todo = []
    for frame in frames:
        if not frame.has_polyp:
            continue
        digest = frame_digest(frame)
        entry = stored.get(frame.rel)
        if isinstance(entry, dict) and entry.get("sha256") == digest and len(entry.get("polyps", ())) == len(frame.boxes):
            result[frame.rel] = entry["polyps"]
        else:
            todo.append((frame, digest))
    if not todo:
        return result
    log(f"captioning {len(todo)} frames' polyps for their attributes (cached in {cache or 'memory'})")
    started = time.perf_counter()
    for done, (frame, digest) in enumerate(todo, start=1):
        result[frame.rel] = caption_polyps(frame)
        stored[frame.rel] = {"sha256": digest, "polyps": result[frame.rel]}
        if cache is not None and (done % SAVE_EVERY == 0 or done == len(todo)):
            _write(cache, stored)
    log(f"captioned {len(todo)} frames in {time.perf_counter() - started:.0f} s")
    return result


def _write(cache: Path, frames: dict) -> None:
    data = {"captioner": MEASURE_VERSION, "frames": dict(sorted(frames.items()))}
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cache, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
