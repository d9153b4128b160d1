"""contact_sheet.jpg: for a quick look, source | result | the new (or removed) polyp's outline, side by side — the
outline on its own tile beside the result, never drawn over the lesion a curator wants to see."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from engine.dataset.image_reader import read_frame
from engine.errors import InputError
from engine.fileio import atomic_write_bytes
from engine.masks.instances import Instance

TILE = 192
MAX_PAIRS = 24
OUTLINE = (40, 255, 80)


NEW_POLYP_ORIGINS = ("generated", "transplant")


def _tile(image: Image.Image, polygons=()) -> Image.Image:
    scale = TILE / max(image.size)
    tile = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(tile)
    for poly in polygons:
        points = [(poly[i] * scale, poly[i + 1] * scale) for i in range(0, len(poly), 2)]
        draw.line(points + points[:1], fill=OUTLINE, width=2)
    canvas = Image.new("RGB", (TILE, TILE), (24, 24, 24))
    canvas.paste(tile, ((TILE - tile.width) // 2, (TILE - tile.height) // 2))
    return canvas


class ContactSheetWriter:
    """Takes records one at a time (``add``); only the first MAX_PAIRS are kept, as small tiles."""

    def __init__(self, output_dir: Path, sources: dict[str, Path]):
        self.output_dir = Path(output_dir)
        self.sources = sources
        self.rows: list[tuple[Image.Image, Image.Image, Image.Image]] = []
        self.seen = 0

    def add(self, record: dict) -> None:
        self.seen += 1
        if self.seen > MAX_PAIRS:
            return
        try:
            source = Image.fromarray(read_frame(self.sources[record["source_frame"]]))
            result = Image.open(self.output_dir / record["image"]).convert("RGB")
        except (KeyError, InputError, OSError):
            return
        outline = [p for d in record["instances"] if d["origin"] in NEW_POLYP_ORIGINS
                   for p in Instance.from_json(d).outline_polygons()]
        outline = outline or [p for d in record.get("removed", []) for p in Instance.from_json(d).outline_polygons()]
        blank = Image.new("RGB", result.size, (0, 0, 0))
        self.rows.append((_tile(source), _tile(result), _tile(blank, outline)))

    def finish(self) -> Path | None:
        """Write contact_sheet.jpg; None when there is nothing to show."""
        return save_sheet(self.rows, self.output_dir / "contact_sheet.jpg")


def save_sheet(rows: list[tuple[Image.Image, Image.Image, Image.Image]], target: Path) -> Path | None:
    """Variants' tiles (source | result | outline), two variants a row, as one JPEG (atomic); None without rows.
    Several writers' rows may be joined into one sheet (the demo's add and removal jobs)."""
    if not rows:
        return None
    columns, gap = 2, 6
    width = 3 * TILE + 4 * gap  # one variant: source | result | outline, then a wider gap
    lines = (len(rows) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * width, lines * (TILE + gap) + gap), (255, 255, 255))
    for index, tiles in enumerate(rows):
        line, column = divmod(index, columns)
        for offset, tile in enumerate(tiles):
            sheet.paste(tile, (column * width + gap + offset * (TILE + gap), line * (TILE + gap) + gap))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=88)
    return atomic_write_bytes(target, buffer.getvalue())


def write_contact_sheet(output_dir: Path, records, sources: dict[str, Path]) -> Path | None:
    """Up to MAX_PAIRS variants (the first records), two per row; None when there is nothing to show."""
    writer = ContactSheetWriter(output_dir, sources)
    for record in records:
        writer.add(record)
        if writer.seen >= MAX_PAIRS:
            break
    return writer.finish()
