"""Bring a device run of device_train.sh home: join the parts it left under $OUT, unpack the run folder into
training_runs/compact-128/ (its model folder, log, card, loss curve and sample grids; the grids show Kvasir-SEG pixels
and are ignored by git), and, where the run did not reach its end, make the model folder from its latest
checkpoint's EMA weights. Then `make compact128-bundle` exports it to .bench/compact-128, parity-checked.

    python training_runs/compact-128/unpack_device_run.py /work/.device/<call>/files [--into training_runs/compact-128]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEPT = ("model", "log.jsonl", "run.json", "model_card.json", "MODEL_CARD.md", "loss.png", "samples",
        "attribute_captions.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", type=Path, help="the folder holding run.tar.part-*")
    parser.add_argument("--into", type=Path, default=HERE)
    args = parser.parse_args(argv)
    parts = sorted(args.parts.glob("run.tar.part-*"))
    if not parts:
        print(f"error: {args.parts}: no run.tar.part-* files", file=sys.stderr)
        return 2
    data = b"".join(part.read_bytes() for part in parts)
    staging = args.into / ".unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(staging, filter="data")
    (run,) = [p for p in staging.iterdir() if p.is_dir()]
    if not (run / "model" / "model.safetensors").is_file():
        _model_from_latest_ema(run)
    for name in KEPT:
        source, target = run / name, args.into / name
        if not source.exists():
            continue
        if target.is_dir():
            shutil.rmtree(target)
        shutil.move(str(source), str(target))
    shutil.rmtree(staging)
    print(f"unpacked {len(parts)} parts into {args.into}: " + ", ".join(sorted(p.name for p in args.into.iterdir())))
    return 0


def _model_from_latest_ema(run: Path) -> None:
    """The run stopped before its model folder: the latest checkpoint's EMA weights with the run's own network."""
    from safetensors.torch import load_file

    from engine.models.compact_unet import CompactConfig, CompactInpaintUNet
    from engine.models.folder import write_model_folder

    ema = run / "latest_ema.safetensors"
    if not ema.is_file():
        raise SystemExit(f"error: {run}: neither a model folder nor the latest checkpoint's EMA weights")
    task = json.loads((run / "run.json").read_text(encoding="utf-8"))["task"]["config"]
    model = CompactInpaintUNet(CompactConfig.from_json(task["model"]))
    model.load_state_dict(load_file(str(ema)))
    write_model_folder(model, {"model_class": "CompactInpaintUNet", "model": task["model"], "task": task}, run / "model")
    # The held-out frames are chosen by a hash of each name (the same 5 % in every compact run on this corpus).
    shutil.copy2(HERE.parent / "compact-96" / "model" / "held_out_frames.txt", run / "model" / "held_out_frames.txt")
    print(f"{run}: model folder made from the latest checkpoint's EMA weights")


if __name__ == "__main__":
    raise SystemExit(main())
