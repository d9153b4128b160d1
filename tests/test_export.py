"""`main.py export`: both exporters, fp16, and refusals (wrong model, parity failure, existing folder)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import main
from engine.errors import ExportError
from engine.export.inpaint_export import export_inpaint_bundle
from engine.pipelines.inpaint import InpaintPipeline


def _generate(bundle_dir):
    pipe = InpaintPipeline.from_bundle(bundle_dir, provider="cpu")
    frame = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[20:70, 30:100] = True
    return pipe(frame, mask, steps=4, seed=3, working_size=(128, 96)).raw


def test_torch_exporter_gives_the_same_images_as_optimum(tiny_pipeline_dir, tiny_bundle, tmp_path):
    destination = tmp_path / "torch_bundle"
    assert main.main(["export", "--from", str(tiny_pipeline_dir), "--to", str(destination), "--exporter", "torch"]) == 0
    manifest = json.loads((destination / "bundle.json").read_text())
    assert manifest["source"]["exporter"].startswith("torch.onnx")
    assert np.abs(_generate(destination) - _generate(tiny_bundle)).max() < 1e-4


def test_fp16_export_passes_its_own_parity_and_runs(tiny_pipeline_dir, tiny_bundle, tmp_path):
    destination = tmp_path / "fp16_bundle"
    report = export_inpaint_bundle(tiny_pipeline_dir, destination, precision="fp16", log=lambda _: None)
    manifest = json.loads((destination / "bundle.json").read_text())
    assert manifest["precision"] == "fp16" and report.precision == "fp16"
    assert (destination / "unet" / "model.onnx").stat().st_size < 0.6 * (tiny_bundle / "unet" / "model.onnx").stat().st_size
    deviation = np.abs(_generate(destination) - _generate(tiny_bundle)).max()
    assert deviation < 0.05, deviation


def test_text_to_image_source_is_refused(tiny_pipeline_dir, tmp_path):
    source = tmp_path / "t2i"
    shutil.copytree(tiny_pipeline_dir, source)
    config_path = source / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["in_channels"] = 4
    config_path.write_text(json.dumps(config))
    with pytest.raises(ExportError, match=r"unet/config\.json: the U-Net takes 4 input channels"):
        export_inpaint_bundle(source, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_disagreeing_export_is_refused_and_leaves_nothing(tiny_pipeline_dir, tmp_path, monkeypatch):
    import engine.export.inpaint_export as exporter

    monkeypatch.setitem(exporter.TOLERANCE, "fp32", (1e-12, 0.0))
    with pytest.raises(ExportError, match=r"model\.onnx: onnxruntime output differs from torch by .* the bundle was not written"):
        export_inpaint_bundle(tiny_pipeline_dir, tmp_path / "out", log=lambda _: None)
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor a temp folder is left behind


def test_existing_destination_needs_overwrite(tiny_pipeline_dir, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportError, match="already exists"):
        export_inpaint_bundle(tiny_pipeline_dir, tmp_path / "out", log=lambda _: None)
    assert main.main(["export", "--from", str(tmp_path / "missing"), "--to", str(tmp_path / "x")]) == 2


def test_the_parity_comparison_every_exporter_makes(tmp_path):
    """engine.export.onnx_export.compare_to_torch: the record a manifest keeps, the log line, the refusals (beyond
    atol + rtol·max|torch|, not finite, another shape), each naming the file."""
    from engine.export.onnx_export import compare_to_torch

    onnx_path = tmp_path / "unet" / "model.onnx"
    expected = np.array([[1.0, -4.0], [2.0, 0.5]], np.float32)
    lines = []
    record = compare_to_torch(expected + np.float32(1e-3), expected, (1e-4, 1e-3), onnx_path, lines.append, "unet")
    assert record == pytest.approx({"max_abs_error": 1e-3, "max_abs_value": 4.0, "allowed": 1e-4 + 4e-3}, rel=1e-4)
    assert lines == ["parity unet: max |onnx - torch| = 0.001 (allowed 0.0041, outputs up to 4)"]
    several = compare_to_torch([expected, expected * 3], [expected, expected * 3], (0.0, 0.0), onnx_path, print)
    assert several["max_abs_error"] == 0.0 and several["max_abs_value"] == 12.0
    with pytest.raises(ExportError, match=r"unet/model\.onnx: onnxruntime output differs from torch by 0\.01 in unet "
                                          r"\(allowed 0\.0041 at fp16\); the bundle was not written"):
        compare_to_torch(expected + np.float32(1e-2), expected, (1e-4, 1e-3), onnx_path, print, "unet", " at fp16")
    with pytest.raises(ExportError, match="differs from torch by nan"):
        compare_to_torch(expected * np.nan, expected, (1.0, 1.0), onnx_path, print)
    with pytest.raises(ExportError, match=r"model\.onnx: onnxruntime gives embedding of shape \(2, 1\), torch \(2, 2\)"):
        compare_to_torch(expected[:, :1], expected, (1.0, 1.0), onnx_path, print, "embedding")
