"""contact_sheet.jpg: source → result pairs with the generated region outlined, for a quick look."""

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


def _tile(image: Image.Image, polygons) -> Image.Image:
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
        self.pairs: list[tuple[Image.Image, Image.Image]] = []
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
        outline = [p for d in record["instances"] if d["origin"] == "generated" for p in Instance.from_json(d).outline_polygons()]
        outline = outline or [p for d in record.get("removed", []) for p in Instance.from_json(d).outline_polygons()]
        self.pairs.append((_tile(source, outline), _tile(result, outline)))

    def finish(self) -> Path | None:
        """Write contact_sheet.jpg; None when there is nothing to show."""
        pairs = self.pairs
        if not pairs:
            return None
        columns = 2
        rows = (len(pairs) + columns - 1) // columns
        gap = 6
        sheet = Image.new("RGB", (columns * (2 * TILE + 3 * gap), rows * (TILE + gap) + gap), (255, 255, 255))
        for index, (left, right) in enumerate(pairs):
            row, column = divmod(index, columns)
            x = column * (2 * TILE + 3 * gap) + gap
            y = row * (TILE + gap) + gap
            sheet.paste(left, (x, y))
            sheet.paste(right, (x + TILE + gap, y))
        buffer = io.BytesIO()
        sheet.save(buffer, format="JPEG", quality=88)
        return atomic_write_bytes(self.output_dir / "contact_sheet.jpg", buffer.getvalue())


def write_contact_sheet(output_dir: Path, records, sources: dict[str, Path]) -> Path | None:
    """Up to MAX_PAIRS pairs (the first records), two pairs per row; None when there is nothing to show."""
    writer = ContactSheetWriter(output_dir, sources)
    for record in records:
        writer.add(record)
        if writer.seen >= MAX_PAIRS:
            break
    return writer.finish()
