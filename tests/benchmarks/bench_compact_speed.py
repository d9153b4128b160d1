#!/usr/bin/env python3
"""Seconds per image of candidate compact bundles against today's default model, in one run, on the same frames.

    python tests/benchmarks/bench_compact_speed.py                       # the default model alone
    python tests/benchmarks/bench_compact_speed.py --bundles .bench/compact-attributes,.bench/compact-detail

The frames are real Kvasir-SEG frames (../shared/data/polyps) whose polyp covers 6–15 % of the frame — around the
median real polyp (10.1 %) — with their own masks; else generated frames with one polyp of that size. Each
contender runs in its own process (its own threads, no warm caches shared) at --threads (default 2), opens its
bundle once, runs one untimed image, then --images timed ones ("Polyp", the bundle's default steps and sampler),
and reports the median s/image. Printed: one row per contender with its ratio to the default model. The issue's
goal: ≤ 1 s per image at 2 threads. This is a benchmark, not a test.

Attribute guidance: with ``--attributes red,lobulated`` the candidates trained with attributes are asked those words
(the default model, trained without, is asked nothing); ``--attribute-guidance 5 --attribute-guidance-until 1,0.5``
adds one row per share of the steps guided apart, beside the row without it (the words on the one guided pair):

    python tests/benchmarks/bench_compact_speed.py --bundles .bench/compact-rare128 --attributes red,lobulated \
        --attribute-guidance 5 --attribute-guidance-until 1,0.5,0.3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
POLYPS = REPO_ROOT.parent / "shared" / "data" / "polyps"
MEDIAN_BAND = (0.06, 0.15)


def median_size_inputs(count: int):
    """(name, frame, mask) of up to ``count`` frames whose polyp is about the median real size."""
    import numpy as np

    from engine.dataset.image_reader import read_frame, read_mask

    chosen = []
    if (POLYPS / "images").is_dir():
        for path in sorted((POLYPS / "images").iterdir()):
            mask = read_mask(POLYPS / "masks" / path.name)
            if MEDIAN_BAND[0] <= mask.mean() <= MEDIAN_BAND[1]:
                chosen.append((path.name, read_frame(path), mask))
            if len(chosen) == count:
                return chosen, "Kvasir-SEG frames (../shared/data/polyps) with their own masks"
    from engine.samples import generate_frame

    while len(chosen) < count:
        frame, masks = generate_frame(seed=len(chosen), width=576, height=512, polyps=1)
        mask = masks[0]
        ys, xs = np.nonzero(mask)
        cy, cx = ys.mean(), xs.mean()
        radius = np.sqrt(0.1 * mask.size / np.pi)
        yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]]
        chosen.append((f"generated-{len(chosen)}", frame, (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2))
    return chosen, "generated frames, a disc of 10 % of the frame"


def worker(bundle: str, threads: int, images: int, asked: dict | None = None) -> dict:
    """One contender's timings; ``asked``: the attributes and attribute-guidance keywords of every call."""
    from engine.pipelines import open_pipeline

    inputs, what = median_size_inputs(images + 1)
    pipeline = open_pipeline(bundle, provider="cpu", threads=threads)
    seconds = []
    for index, (_, frame, mask) in enumerate(inputs):
        started = time.perf_counter()
        result = pipeline(frame, mask, prompt="Polyp", seed=index, **(asked or {}))
        if index:  # the first image warms the session up
            seconds.append(time.perf_counter() - started)
    return {"bundle": bundle, "median_s": statistics.median(seconds), "all_s": [round(s, 3) for s in seconds],
            "frames": what, "detail": result.settings.get("detail"), "asked": asked or {}}


def contenders_of(bundles: list[str], attributes: str, guidance: float | None, untils: str) -> list[tuple]:
    """(bundle, asked keywords, label) per row: the default model as it is, then each candidate — asked the words
    if it was trained with attributes, without attribute guidance and with it at each share of the steps."""
    from engine.bundle import read_bundle
    from engine.captioning.conditioning import parse_attributes
    from engine.jobs.spec import DEFAULT_MODEL
    from engine.pipelines.attribute_inputs import bundle_attribute_values

    rows = [(str(DEFAULT_MODEL), {}, "")]
    words = parse_attributes(attributes) if attributes else None
    for bundle in bundles:
        if not isinstance(words, dict) or bundle_attribute_values(read_bundle(bundle, verify_hashes=False)) is None:
            rows.append((bundle, {}, ""))
            continue
        asked = {"attributes": words}
        rows.append((bundle, asked, attributes))
        for until in ([float(u) for u in untils.split(",") if u] or [None]) if guidance is not None else []:
            rows.append((bundle, {**asked, "attribute_guidance": guidance, "attribute_guidance_until": until},
                         f"{attributes}, A={guidance:g}" + ("" if until is None else f" on {until:g} of the steps")))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", default="", help="comma list of candidate bundle folders or names")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    parser.add_argument("--attributes", default="", help="words the candidates trained with attributes are asked")
    parser.add_argument("--attribute-guidance", type=float, default=None,
                        help="with --attributes: also rows with the words guided apart this hard")
    parser.add_argument("--attribute-guidance-until", default="",
                        help="comma list of shares of the steps to guide the words apart on, a row each")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--asked", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.images, json.loads(args.asked))))
        return 0
    contenders = contenders_of([b for b in args.bundles.split(",") if b], args.attributes, args.attribute_guidance,
                               args.attribute_guidance_until)
    rows = []
    for bundle, asked, label in contenders:
        completed = subprocess.run([sys.executable, __file__, "--worker", bundle, "--threads", str(args.threads),
                                    "--images", str(args.images), "--asked", json.dumps(asked)],
                                   capture_output=True, text=True, cwd=REPO_ROOT)
        if completed.returncode:
            print(f"{bundle}: failed\n{completed.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append({**json.loads(completed.stdout.strip().splitlines()[-1]), "label": label})
    base = rows[0]["median_s"]
    print(f"frames: {rows[0]['frames']}; {args.images} timed images each, {args.threads} thread(s), CPU")
    print(f"{'bundle':60s} {'s/image':>8s} {'ratio to default':>17s}  detail stage")
    for row in rows:
        detail = row["detail"]
        ran = "—" if detail is None else ("ran" if detail.get("ran") else "not needed")
        name = Path(row["bundle"]).name + (f" ({row['label']})" if row["label"] else "")
        print(f"{name:60s} {row['median_s']:8.3f} {row['median_s'] / base:17.2f}  {ran}")
    if args.json:
        rows = [{**row, "ratio_to_default": round(row["median_s"] / base, 3)} for row in rows]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"threads": args.threads, "images": args.images, "rows": rows}, indent=1)
                             + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
