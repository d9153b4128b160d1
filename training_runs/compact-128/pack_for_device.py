"""Pack the training corpus to travel to a lent GPU machine (the `device` tool carries at most 64 MiB with the
working tree): Kvasir-SEG's frames unchanged, its masks binarised losslessly to 1-bit PNG (the trainer reads a mask
as gray > 127, so the masks it reads are the same, and so are the attribute captions' cache keys), the Nerthus
normal frames, and the attribute captions already measured here (so the GPU machine does not caption again).

    python training_runs/compact-128/pack_for_device.py --data ../shared/data --out .gpu

The folder it writes holds dataset frames: it must stay out of git (.git/info/exclude) and is never committed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="shared/data (kvasir-seg/, normal/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--captions", type=Path, default=HERE.parent / "compact-attributes" / "attribute_captions.json")
    args = parser.parse_args()
    source, out = args.data / "kvasir-seg", args.out / "kvasir-seg"
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "kavsir_bboxes.json", out / "kavsir_bboxes.json")
    for image in sorted((source / "images").iterdir()):
        shutil.copy2(image, out / "images" / image.name)
        with Image.open(source / "masks" / image.name) as mask:
            binary = np.asarray(mask.convert("L")) > 127
        Image.fromarray(binary).save(out / "masks" / (image.stem + ".png"), optimize=True)
    shutil.copytree(args.data / "normal", args.out / "normal", dirs_exist_ok=True)
    shutil.copy2(args.captions, args.out / "attribute_captions.json")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
