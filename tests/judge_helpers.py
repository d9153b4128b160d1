"""Helpers for the judge tests: generated polyp frames, a tiny trained judge, fake PolypForge outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.fileio import save_png_atomic
from engine.masks.instances import instances_from_mask
from engine.samples import generate_frame

TINY_WIDTHS = (8, 16, 32, 64)
TINY_STEPS = 300
TINY_SIZE = 64
# Dice the tiny judge must reach on its own held-out generated frames after TINY_STEPS steps
TINY_MIN_VAL_DICE = 0.6


def train_tiny_judge(root: Path) -> tuple[Path, dict]:
    from engine.evaluation.train_judge import JudgeTraining, run_train_judge
    from engine.samples import generate_sample_set

    generate_sample_set(root / "frames", count=40, seed=3, width=128, height=96, with_polyps_every=1)
    outcome = run_train_judge(JudgeTraining(
        input=root / "frames", to=root / "judge", run_dir=root / "run", steps=TINY_STEPS, size=TINY_SIZE,
        widths=TINY_WIDTHS, validate_every=50, patience=None, threads=1, progress=False), log=lambda text: None)
    return root / "judge", outcome


def polyp_frame(seed: int, width: int = 128, height: int = 96) -> tuple[np.ndarray, np.ndarray]:
    frame, masks = generate_frame(seed, width=width, height=height, polyps=1)
    mask = np.zeros((height, width), bool)
    for m in masks:
        mask |= np.asarray(m) > 0
    return frame, mask


def real_folder(root: Path, seeds, width: int = 96, height: int = 80) -> Path:
    """A Kvasir-SEG-like folder (images/, masks/) of one generated polyp frame per seed, named p<seed>.png."""
    for seed in seeds:
        frame, mask = polyp_frame(seed, width, height)
        save_png_atomic(root / "images" / f"p{seed}.png", frame)
        save_png_atomic(root / "masks" / f"p{seed}.png", mask.astype(np.uint8) * 255)
    return root


def clean_frame(seed: int, width: int = 128, height: int = 96) -> np.ndarray:
    frame, _ = generate_frame(seed, width=width, height=height, polyps=0)
    return frame


def fake_output(root: Path, variants: list[dict]) -> Path:
    """A minimal PolypForge output: images/train/*.png, masks/train/*.png, manifest.jsonl.

    Each variant: {"name", "image" (H, W, 3), "region" (H, W) bool, "mode", "source_sha256" (optional)}."""
    lines = []
    for v in variants:
        image_rel = f"images/train/{v['name']}.png"
        mask_rel = f"masks/train/{v['name']}.png"
        save_png_atomic(root / image_rel, v["image"])
        height, width = v["region"].shape
        region_instances = [i.to_json() for i in instances_from_mask(v["region"], "generated")]
        generated = region_instances if v["mode"] == "add" else []
        save_png_atomic(root / mask_rel, (v["region"] if v["mode"] == "add" else np.zeros_like(v["region"])).astype(np.uint8))
        lines.append({"key": f"{v['name']}#0", "image": image_rel, "mask": mask_rel, "status": "ok", "mode": v["mode"],
                      "mask_source": v.get("mask_source", "user"), "bundle": "constructed", "bundle_id": "0" * 64,
                      "source_frame": v.get("source_frame", v["name"] + ".png"),
                      "source_sha256": v.get("source_sha256"), "width": width, "height": height,
                      "instances": generated, "removed": region_instances if v["mode"] == "remove" else []})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return root


def random_judge(destination: Path) -> Path:
    """A random-weight judge bundle (32 px; its scores vary from image to image and mean nothing)."""
    import torch

    from engine.models.segmenter import JudgeNet
    from engine.export.segmenter_export import export_segmenter_bundle

    torch.manual_seed(0)
    export_segmenter_bundle(JudgeNet((4, 8, 16)), destination, 32, extra={"random_weights": True}, log=lambda t: None)
    return destination
