"""Donor polyps: the curator's own annotated polyps, cut out of their frames with a soft margin of mucosa.

A donor is a crop around one polyp (its box widened by ``MARGIN_FRACTION`` of its size on each side), the polyp's
own outline in that crop (the label it will carry wherever it goes), and a ring of the mucosa around it: the pixels
whose colour statistics stand for "the light and tissue this polyp was seen in", which the colour match maps onto
the ring around its new place.

Which polyps may be donors: only those with a known outline (box-only labels have none) and wholly inside the
visible view — a polyp cut by the endoscope's border would carry that straight cut to a place where nothing cuts
it. Which frames may give donors is the caller's rule (the batch job takes only the input's train frames, never
val/test ones, which stay unseen).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.dataset.discovery import SourceFrame
from engine.dataset.image_reader import read_frame, read_mask
from engine.errors import PolypForgeError
from engine.masks.instances import split_instances
from engine.masks.placement import visible_mucosa

MARGIN_FRACTION = 0.25  # mucosa kept around the polyp's box, as a fraction of the box's larger side
MIN_MARGIN_PX = 6
RING_FRACTION = 0.15  # the colour ring's width, as a fraction of the polyp's equivalent diameter
MIN_RING_PX = 4
MIN_DONOR_PIXELS = 64
CACHED_FRAMES = 64  # donor frames whose cut donors a pool keeps in memory
DONOR_TRIES = 12  # donor frames tried for one variant before giving up (a frame may have no usable polyp)


@dataclass(frozen=True)
class Donor:
    """One polyp cut from its frame. Arrays are crops of the frame (all the same height and width)."""

    source: str  # the frame it came from (path relative to the input)
    source_sha256: str
    polyp: int  # which polyp of that frame (index among its outlined instances)
    box: tuple[int, int, int, int]  # the crop in its frame: x, y, width, height
    pixels: np.ndarray  # uint8 (h, w, 3)
    mask: np.ndarray  # bool (h, w): the polyp's outline
    ring: np.ndarray  # bool (h, w): mucosa around it (no polyp, no border), for colour statistics
    frame_pixels: int  # its frame's height × width

    @property
    def area_fraction(self) -> float:
        """The polyp's share of its own frame (what the size distribution is measured in)."""
        return float(self.mask.sum()) / self.frame_pixels

    def describe(self) -> dict:
        return {"frame": self.source, "frame_sha256": self.source_sha256, "polyp": self.polyp,
                "box": list(self.box), "area_fraction": round(self.area_fraction, 6)}


def cut_donors(frame: np.ndarray, polyp_masks: list[np.ndarray], source: str, source_sha256: str) -> list[Donor]:
    """The donors of one frame: one per polyp mask (bool, frame-sized) that is large enough, lies wholly on the
    visible view and is not clipped by the frame's edge; others are passed over."""
    height, width = frame.shape[:2]
    visible = visible_mucosa(frame)
    all_polyps = np.zeros((height, width), bool)
    for mask in polyp_masks:
        all_polyps |= mask
    near_polyp = cv2.dilate(all_polyps.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    donors = []
    for index, mask in enumerate(polyp_masks):
        pixels = int(mask.sum())
        if pixels < MIN_DONOR_PIXELS:
            continue
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        if y0 == 0 or x0 == 0 or y1 == height or x1 == width:
            continue  # cut by the frame's edge
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        if (grown & ~visible).any():
            continue  # touches or is cut by the endoscope's border (or an overlay box)
        margin = max(MIN_MARGIN_PX, round(MARGIN_FRACTION * max(y1 - y0, x1 - x0)))
        cy0, cy1 = max(0, y0 - margin), min(height, y1 + margin)
        cx0, cx1 = max(0, x0 - margin), min(width, x1 + margin)
        crop_mask = mask[cy0:cy1, cx0:cx1]
        ring_px = max(MIN_RING_PX, round(RING_FRACTION * 2 * np.sqrt(pixels / np.pi)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1, 2 * ring_px + 1))
        ring = cv2.dilate(crop_mask.astype(np.uint8), kernel).astype(bool)
        ring &= ~near_polyp[cy0:cy1, cx0:cx1] & visible[cy0:cy1, cx0:cx1]
        donors.append(Donor(source=source, source_sha256=source_sha256, polyp=index,
                            box=(cx0, cy0, cx1 - cx0, cy1 - cy0), pixels=frame[cy0:cy1, cx0:cx1].copy(),
                            mask=crop_mask.copy(), ring=ring, frame_pixels=height * width))
    return donors


@dataclass
class DonorPool:
    """The frames whose polyps may be transplanted (the input's train frames with outlined polyps), read lazily:
    a variant draws a frame, its donors are cut once and kept for the next variants. Light to send to a Ray
    worker (paths only; the cache is left behind)."""

    frames: list[SourceFrame]
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def of(cls, frames: list[SourceFrame]) -> "DonorPool":
        """Donor frames among ``frames``: split "train", a real frame (not an earlier job's variant), with a mask
        file or outlined labels."""
        return cls([f for f in frames if f.split == "train" and f.made_by is None
                    and (f.mask_path is not None or any(i.shape == "polygon" for i in f.label_instances or ()))])

    def __getstate__(self):
        return {"frames": self.frames}

    def __setstate__(self, state):
        self.frames = state["frames"]
        self._cache = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.frames)

    def donors_of(self, index: int) -> list[Donor]:
        """The donors of frame ``index`` (cut once); [] when it has none usable or cannot be read. Safe to call
        from several threads."""
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        frame = self.frames[index]
        try:
            pixels = read_frame(frame.path)
            donors = cut_donors(pixels, self._polyp_masks(frame, *pixels.shape[:2]), frame.rel,
                                hashlib.sha256(frame.path.read_bytes()).hexdigest())
        except (PolypForgeError, OSError):
            donors = []  # an unreadable donor frame is passed over; as a target it fails on its own
        with self._lock:
            self._cache[index] = donors
            while len(self._cache) > CACHED_FRAMES:
                self._cache.popitem(last=False)
        return donors

    @staticmethod
    def _polyp_masks(frame: SourceFrame, height: int, width: int) -> list[np.ndarray]:
        """One mask per polyp: the mask file's components, else the outlined labels (box-only ones have no
        outline to carry)."""
        if frame.mask_path is not None:
            mask = read_mask(frame.mask_path)
            if mask.shape != (height, width):
                return []
            return split_instances(mask)
        return [i.raster(height, width) for i in frame.label_instances or () if i.shape == "polygon"]

    def draw(self, rng: np.random.Generator) -> Donor:
        """A donor polyp: a donor frame drawn uniformly, then one of its polyps; PolypForgeError when
        ``DONOR_TRIES`` frames in a row have none usable."""
        if not self.frames:
            raise PolypForgeError("no donor polyps: the input has no train frames with outlined polyps (masks)")
        for _ in range(DONOR_TRIES):
            donors = self.donors_of(int(rng.integers(len(self.frames))))
            if donors:
                return donors[int(rng.integers(len(donors)))]
        raise PolypForgeError(f"no usable donor polyp in {DONOR_TRIES} donor frames drawn (polyps cut by the view's "
                              "border, or too small, are not used)")
