#!/usr/bin/env python3
"""Does the caption change the generated polyp the way its words say? A script, not a test.

    python tests/benchmarks/ccis_caption_effect.py --bundle .bench/ccis-compact --data ../shared/data/kvasir-seg \
        --held-out training_runs/compact/model/held_out_frames.txt --out /tmp/ccis-effect [--frames 16] [--seeds 2] \
        [--guidance 7]

For each held-out Kvasir-SEG frame with one polyp (frames the ControlNet and its base never trained on): the
frame's own caption (engine.captioning, measured from its pixels and mask), then the same caption with one word
swapped — colour "pale" vs "red", surface "smooth" vs "lobulated" — generated at the frame's own mask with the
same seed (so only the words differ), and the captioner's measures read back from each generated lesion: colour
(Lab a* of the lesion minus its mucosa ring, `delta_a`; red needs delta_a ≥ its threshold) and surface (coarse
texture). Prints per contrast the paired mean difference of the measure (+ a sign test: how many frame × seed
pairs move the way the words say) and how often the captioner reads back the requested word; writes
results.json and grid.png (source | caption's colour pale | red | surface smooth | lobulated, at the region).

Size words are not varied: the ControlNet is given the mask, which fixes the size; "small" vs "large" at the
same mask asks for something the mask contradicts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONTRASTS = {"colour": ("pale", "red"), "surface": ("smooth", "lobulated")}
MEASURE = {"colour": "delta_a", "surface": "coarse_texture"}


def sign_test_p(wins: int, n: int) -> float:
    """Two-sided exact binomial p of ``wins`` of ``n`` under p = 0.5."""
    if n == 0:
        return 1.0
    k = min(wins, n - wins)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def crop_of(image: np.ndarray, mask: np.ndarray, pad: float = 0.3) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    margin = int(pad * max(y1 - y0, x1 - x0))
    h, w = mask.shape
    return image[max(0, y0 - margin):min(h, y1 + margin), max(0, x0 - margin):min(w, x1 + margin)]


def main() -> int:
    from engine.captioning.captioner import NoPolyp, caption_frame
    from engine.captioning.template import describe
    from engine.dataset.image_reader import read_frame, read_mask
    from engine.pipelines import open_pipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--held-out", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the bundle's)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    pipeline = open_pipeline(args.bundle, provider="cpu", threads=args.threads, purpose="inpaint")
    stems = [s.strip() for s in args.held_out.read_text().splitlines() if s.strip()]
    rows, grid_rows = [], []
    for stem in stems:
        if len(grid_rows) >= args.frames:
            break
        image_path = next((args.data / "images").glob(stem + ".*"), None)
        mask_path = next((args.data / "masks").glob(stem + ".*"), None)
        if image_path is None or mask_path is None:
            continue
        frame, mask = read_frame(image_path), read_mask(mask_path) > 0
        try:
            own = caption_frame(frame, mask)
        except NoPolyp:
            continue
        if len(own.polyps) != 1:
            continue
        attributes = {k: v for k, v in own.attributes.items() if k != "measures"}
        grid = [crop_of(frame, mask)]
        for attribute, words in CONTRASTS.items():
            for word in words:
                prompt = describe({**attributes, attribute: word})
                for seed in range(args.seeds):
                    result = pipeline(frame, mask.astype(np.uint8) * 255, prompt=prompt, steps=args.steps, seed=seed,
                                      guidance_scale=args.guidance)
                    read_back = caption_frame(result.image, mask).attributes
                    rows.append({"frame": stem, "attribute": attribute, "word": word, "seed": seed, "prompt": prompt,
                                 "read_back": read_back[attribute],
                                 "measure": float(read_back["measures"][MEASURE[attribute]])})
                    if seed == 0:
                        grid.append(crop_of(result.image, mask))
        grid_rows.append(grid)
        print(f"{stem}: own caption {own.text!r}", flush=True)

    summary = {}
    for attribute, (low, high) in CONTRASTS.items():
        by_key = {(r["frame"], r["seed"], r["word"]): r for r in rows if r["attribute"] == attribute}
        pairs = [(by_key[(f, s, low)]["measure"], by_key[(f, s, high)]["measure"])
                 for (f, s, w) in by_key if w == low and (f, s, high) in by_key]
        differences = np.array([b - a for a, b in pairs])
        wins, moved = int((differences > 0).sum()), int((differences != 0).sum())  # ties count for neither side
        asked = [r for r in rows if r["attribute"] == attribute]
        summary[attribute] = {
            "contrast": f"{low} -> {high}", "measure": MEASURE[attribute], "pairs": len(pairs),
            f"mean_{low}": float(np.mean([a for a, _ in pairs])) if pairs else None,
            f"mean_{high}": float(np.mean([b for _, b in pairs])) if pairs else None,
            "mean_difference": float(differences.mean()) if len(differences) else None,
            "pairs_moving_as_the_words_say": wins, "sign_test_p": sign_test_p(wins, moved),
            "read_back_as_requested": float(np.mean([r["read_back"] == r["word"] for r in asked])) if asked else None,
        }
        s = summary[attribute]
        print(f"{attribute}: {low} -> {high}: {MEASURE[attribute]} {s[f'mean_{low}']:.3f} -> {s[f'mean_{high}']:.3f} "
              f"(mean paired difference {s['mean_difference']:+.3f}; {wins}/{len(pairs)} pairs move as the words say, "
              f"sign test p = {s['sign_test_p']:.3g}); read back as the requested word {s['read_back_as_requested']:.0%}",
              flush=True)
    (args.out / "results.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")

    cell = 112
    header = ["source", "pale", "red", "smooth", "lobulated"]
    canvas = Image.new("RGB", (cell * len(header), 16 + cell * len(grid_rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for column, label in enumerate(header):
        draw.text((column * cell + 4, 2), label, fill="black")
    for row, crops in enumerate(grid_rows):
        for column, crop in enumerate(crops):
            canvas.paste(Image.fromarray(crop).resize((cell, cell)), (column * cell, 16 + row * cell))
    canvas.save(args.out / "grid.png")
    print(f"wrote {args.out / 'grid.png'} and results.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
