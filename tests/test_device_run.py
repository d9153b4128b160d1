"""The way home of a GPU run (training_runs/compact-128): device_train.sh's parts are joined and unpacked into a run
folder whose model exports to a bundle, also when the run stopped before its model folder (the latest checkpoint's
EMA weights then make it). Trained for real on a tiny network; no GPU needed."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from cli_helpers import run_main

REPO = Path(__file__).resolve().parent.parent
UNPACK = REPO / "training_runs" / "compact-128" / "unpack_device_run.py"
TINY = ["--preset", "compact", "--resolution", "32", "--widths", "8,16", "--blocks", "1", "--stem", "2",
        "--attention-levels", "1", "--batch-size", "4", "--threads", "1", "--quiet", "--held-out-fraction", "0.25",
        "--steps", "6", "--checkpoint-every", "3", "--sample-every", "0", "--validate-every", "0"]


def _parts(run: Path, out: Path, drop_model: bool) -> None:
    """What device_train.sh leaves under $OUT: the run folder without checkpoints, tarred and split."""
    from safetensors.torch import save_file

    from engine.training.checkpoint import load_latest_checkpoint

    save_file(load_latest_checkpoint(run).group("ema"), str(run / "latest_ema.safetensors"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(run.rglob("*")):
            relative = path.relative_to(run.parent)
            if "checkpoints" in relative.parts or (drop_model and "model" in relative.parts[1:2]):
                continue
            archive.add(path, arcname=str(relative), recursive=False)
    data = buffer.getvalue()
    out.mkdir(parents=True)
    step = max(1, len(data) // 3 + 1)
    for index in range(0, len(data), step):
        (out / f"run.tar.part-{index // step:02d}").write_bytes(data[index:index + step])


def test_a_device_run_comes_home_and_exports(tmp_path):
    from engine.export.compact_export import export_compact_bundle
    from engine.models.compact_unet import load_compact_model
    from engine.samples.frames import generate_sample_set

    corpus = tmp_path / "corpus"
    generate_sample_set(corpus, count=8, seed=2, width=160, height=128, with_polyps_every=1)
    run = tmp_path / "compact-128"
    trained = run_main(["train", *TINY, "--input", str(corpus), "--run", str(run)])
    assert trained.returncode == 0, trained.stderr[-2000:]
    reference, _ = load_compact_model(run / "model")

    for drop_model in (False, True):
        out, home = tmp_path / f"out-{drop_model}", tmp_path / f"home-{drop_model}"
        _parts(run, out, drop_model)
        home.mkdir()
        result = subprocess.run([sys.executable, str(UNPACK), str(out), "--into", str(home)], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert ("from the latest checkpoint" in result.stdout) == drop_model
        assert (home / "log.jsonl").is_file() and (home / "run.json").is_file()
        assert not (home / "checkpoints").exists() and not (home / "latest_ema.safetensors").exists()
        model, config = load_compact_model(home / "model")
        for key, value in reference.state_dict().items():
            assert torch.equal(value, model.state_dict()[key]), (drop_model, key)
        bundle = export_compact_bundle(home / "model", tmp_path / f"bundle-{drop_model}", name="tiny", log=lambda _: None)
        assert (bundle / "unet" / "model.onnx").is_file()


def test_unpack_names_a_folder_without_parts(tmp_path):
    result = subprocess.run([sys.executable, str(UNPACK), str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr and "run.tar.part-" in result.stderr
