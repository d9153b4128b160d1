"""The --explain picture of a proposal: why the proposer put the box where it did.

Left, the query frame: the kept patch matches (filled green = in the largest cluster, which makes the box;
hollow grey = the others), the proposal's box (yellow; other accepted proposals thin cyan with their rank,
refused ones thin red; when every proposal was refused, the best refused one is shown in red). Right, the candidate (the stored polyp-free frame of the database entry)
with its mask tinted green and outlined, its in-mask patch centres as small dots. Lines join each kept match's
query patch to the candidate patch it matched. Under the panels: every proposal and every refusal, one line
each.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from engine.fileio import save_png_atomic
from engine.retrieval.database import RetrievalDatabase
from engine.retrieval.features import PatchGrid
from engine.retrieval.proposer import Proposal

PANEL_HEIGHT = 400
GAP = 16
HEADER = 30
LINE = 20
FONT = cv2.FONT_HERSHEY_SIMPLEX

YELLOW = (255, 214, 0)
CYAN = (0, 200, 255)
RED = (255, 60, 60)
GREEN = (40, 230, 90)
GREY = (170, 170, 170)
WHITE = (240, 240, 240)
BACKGROUND = (24, 24, 28)


def _fit(image: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    scale = height / image.shape[0]
    width = max(1, int(round(image.shape[1] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation), scale


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], colour=WHITE, scale: float = 0.48,
          max_width: int | None = None) -> None:
    if max_width is not None and cv2.getTextSize(text, FONT, scale, 1)[0][0] > max_width:
        while text and cv2.getTextSize(text + "..", FONT, scale, 1)[0][0] > max_width:
            text = text[:-1]
        text += ".."  # Hershey fonts have no ellipsis
    cv2.putText(canvas, text, origin, FONT, scale, colour, 1, cv2.LINE_AA)


def _box(canvas: np.ndarray, xyxy, colour, thickness: int, offset: tuple[int, int], scale: float) -> None:
    x0, y0, x1, y1 = xyxy
    ox, oy = offset
    p0 = (int(round(ox + x0 * scale)), int(round(oy + y0 * scale)))
    p1 = (int(round(ox + x1 * scale)) - 1, int(round(oy + y1 * scale)) - 1)
    cv2.rectangle(canvas, p0, p1, colour, thickness, cv2.LINE_AA)


def _short(path: str, keep: int = 2) -> str:
    parts = Path(path).parts
    return "/".join(parts[-keep:]) if parts else path


def render_explain(frame: np.ndarray, proposals: list[Proposal], refusals: list[Proposal],
                   database: RetrievalDatabase, query_name: str = "query") -> np.ndarray:
    """The picture as an RGB uint8 array."""
    grid: PatchGrid = database.grid
    height, width = frame.shape[:2]
    shown = proposals[0] if proposals else next((r for r in refusals if r.matches is not None), None)
    query_panel, q_scale = _fit(frame, PANEL_HEIGHT)

    if shown is not None:
        entry_id = shown.candidate.entry_id
        entry = database.entry(entry_id)
        thumb = database.thumbnail(entry_id)
        mask = database.mask(entry_id)
        if thumb is None:
            thumb = np.full((*mask.shape, 3), 60, np.uint8)
        cand_w, cand_h = entry.get("frame_size", [mask.shape[1], mask.shape[0]])
        cand_panel, _ = _fit(thumb, PANEL_HEIGHT)
        c_scale = cand_panel.shape[0] / cand_h  # candidate frame pixels → panel pixels
        mask_small = cv2.resize(mask.astype(np.uint8), (cand_panel.shape[1], cand_panel.shape[0]),
                                interpolation=cv2.INTER_NEAREST).astype(bool)
        tinted = cand_panel.astype(np.float32)
        tinted[mask_small] = tinted[mask_small] * 0.6 + np.array(GREEN, np.float32) * 0.4
        cand_panel = tinted.astype(np.uint8)
        contours, _ = cv2.findContours(mask_small.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(cand_panel, contours, -1, GREEN, 2, cv2.LINE_AA)
    else:
        cand_panel = np.full((PANEL_HEIGHT, PANEL_HEIGHT, 3), 40, np.uint8)
        cand_w = cand_h = 1
        c_scale = 1.0

    footer_lines = []
    for rank, proposal in enumerate(proposals, start=1):
        x, y, w, h = proposal.box
        merged = f" + merged {', '.join(str(c.entry_id) for c in proposal.merged)}" if proposal.merged else ""
        footer_lines.append((f"#{rank}  box x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}  score {proposal.score:.3f}  "
                             f"candidate {proposal.candidate.entry_id} (cos {proposal.candidate.similarity:.3f}){merged}",
                             YELLOW if rank == 1 else CYAN))
    for refusal in refusals:
        footer_lines.append((f"refused: candidate {refusal.candidate.entry_id}: {refusal.reason_refused}", RED))
    if not proposals and not refusals:
        footer_lines.append(("no candidates (the database is empty)", RED))

    total_w = query_panel.shape[1] + GAP + cand_panel.shape[1]
    total_h = HEADER + PANEL_HEIGHT + 8 + LINE * len(footer_lines) + 6
    canvas = np.full((total_h, total_w, 3), BACKGROUND, np.uint8)
    q_off = (0, HEADER)
    c_off = (query_panel.shape[1] + GAP, HEADER)
    canvas[HEADER:HEADER + PANEL_HEIGHT, :query_panel.shape[1]] = query_panel
    canvas[HEADER:HEADER + PANEL_HEIGHT, c_off[0]:c_off[0] + cand_panel.shape[1]] = cand_panel

    _text(canvas, f"query: {query_name} ({width}x{height})", (6, 20), max_width=query_panel.shape[1] - 8)
    if shown is not None:
        c = shown.candidate
        _text(canvas, f"candidate {c.entry_id} (rank {c.rank + 1}, cos {c.similarity:.3f}, "
                      f"{c.how.split('-')[0] if c.how.startswith('removed-by') else c.how}): {_short(c.source, 1)}",
              (c_off[0] + 6, 20), max_width=cand_panel.shape[1] - 8)

    # Refused boxes (thin red), other accepted proposals (thin cyan), then the shown one on top.
    for refusal in refusals:
        if refusal is not shown and refusal.box[2] > 0 and refusal.box[3] > 0:
            _box(canvas, refusal.xyxy, RED, 1, q_off, q_scale)
    for rank, proposal in enumerate(proposals[1:], start=2):
        _box(canvas, proposal.xyxy, CYAN, 1, q_off, q_scale)
        x0, y0 = proposal.xyxy[:2]
        _text(canvas, f"#{rank}", (int(q_off[0] + x0 * q_scale) + 3, int(q_off[1] + y0 * q_scale) + 14), CYAN, 0.45)

    if shown is not None and shown.matches is not None:
        m = shown.matches
        q_xy = grid.patch_centres_in_frame(m.query_patches, width, height) * q_scale + np.array(q_off)
        c_xy = grid.patch_centres_in_frame(m.candidate_patches, cand_w, cand_h) * c_scale + np.array(c_off)
        in_xy = grid.patch_centres_in_frame(m.in_mask, cand_w, cand_h) * c_scale + np.array(c_off)
        for x, y in in_xy:
            cv2.circle(canvas, (int(round(x)), int(round(y))), 1, WHITE, -1, cv2.LINE_AA)
        member = m.labels == m.chosen
        order = np.argsort(member)  # others first, cluster members drawn on top
        for i in order:
            p = (int(round(q_xy[i, 0])), int(round(q_xy[i, 1])))
            q = (int(round(c_xy[i, 0])), int(round(c_xy[i, 1])))
            colour = GREEN if member[i] else GREY
            cv2.line(canvas, p, q, colour, 1, cv2.LINE_AA)
            if member[i]:
                cv2.circle(canvas, p, 4, GREEN, -1, cv2.LINE_AA)
            else:
                cv2.circle(canvas, p, 4, GREY, 1, cv2.LINE_AA)
            cv2.circle(canvas, q, 3, colour, -1, cv2.LINE_AA)
        colour = YELLOW if shown.reason_refused is None else RED
        _box(canvas, shown.xyxy, colour, 2, q_off, q_scale)

    y = HEADER + PANEL_HEIGHT + 8 + 14
    for text, colour in footer_lines:
        _text(canvas, text, (6, y), colour, 0.45, max_width=total_w - 12)
        y += LINE
    return canvas


def write_explain(path: str | os.PathLike[str], frame: np.ndarray, proposals: list[Proposal],
                  refusals: list[Proposal], database: RetrievalDatabase, query_name: str = "query") -> Path:
    picture = render_explain(frame, proposals, refusals, database, query_name)
    return save_png_atomic(path, picture)
