"""`main.py doctor` (engine.doctor) and the built-app bundle lookup (engine.bundle.format, sys.frozen)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine import doctor
from engine.bundle import format as bundle_format
from engine.cli.doctor import EXIT_NOT_READY, EXIT_READY, register_commands

REPO = Path(__file__).resolve().parents[1]
DEMOS = ("demo-sd-inpaint", "demo-dinov2")


@pytest.fixture()
def models(tmp_path, monkeypatch) -> Path:
    """A private bundles folder ($POLYPFORGE_MODELS) holding copies of the two demo bundles."""
    folder = tmp_path / "models"
    for name in DEMOS:
        shutil.copytree(REPO / "exported_models" / name, folder / name)
    monkeypatch.setenv("POLYPFORGE_MODELS", str(folder))
    return folder


def _doctor(argv: list[str], capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    handlers = register_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["doctor", *argv])
    code = handlers[args.command](args)
    return code, capsys.readouterr().out


def test_intact_bundles_are_ready_with_the_demo_warning(models, tmp_path, capsys):
    code, text = _doctor(["--json", "--output", str(tmp_path / "not" / "yet")], capsys)
    report = json.loads(text)
    assert code == EXIT_READY
    assert report["status"] == "warning" and "demo bundle" in report["verdict"]
    by_name = {b["name"]: b for b in report["bundles"]}
    assert set(by_name) == set(DEMOS)
    assert by_name["demo-sd-inpaint"]["kind"] == "sd-inpaint" and by_name["demo-dinov2"]["kind"] == "dinov2"
    assert all(b["integrity"] == "ok" and b["size_bytes"] > 0 for b in by_name.values())
    assert by_name["demo-sd-inpaint"]["size_bytes"] == sum(
        p.stat().st_size for p in (models / "demo-sd-inpaint").rglob("*") if p.is_file() and p.name != "bundle.json")
    assert report["output"]["checked_at"] == str(tmp_path)  # the nearest existing folder of the output location
    assert report["output"]["free_bytes"] > 0
    assert report["onnxruntime"]["importable"] and "CPUExecutionProvider" in report["onnxruntime"]["available_providers"]
    assert report["engine_version"] and report["python"].startswith(sys.version.split()[0])
    assert {c["name"] for c in report["gpu_libraries"]} >= {"CUDA runtime", "cuDNN", "TensorRT"}


def test_altered_bundle_file_is_named_and_not_ready(models, tmp_path, capsys):
    unet = models / "demo-sd-inpaint" / "unet" / "model.onnx"
    data = bytearray(unet.read_bytes())
    data[-1] ^= 0xFF
    unet.write_bytes(bytes(data))
    code, text = _doctor(["--output", str(tmp_path)], capsys)
    assert code == EXIT_NOT_READY
    verdict = [line for line in text.splitlines() if line.startswith("Verdict")]
    assert len(verdict) == 1 and "NOT READY" in verdict[0] and str(unet) in verdict[0] and "sha256" in verdict[0]
    assert "demo-dinov2" in text and "integrity ok" in text
    # --no-verify skips the hash check: the altered file is not noticed
    code, text = _doctor(["--json", "--no-verify", "--output", str(tmp_path)], capsys)
    assert code == EXIT_READY
    assert {b["integrity"] for b in json.loads(text)["bundles"]} == {"not checked"}


def test_no_inpainting_bundle_is_not_ready(models, tmp_path, capsys):
    shutil.rmtree(models / "demo-sd-inpaint")
    code, text = _doctor(["--json", "--output", str(tmp_path)], capsys)
    report = json.loads(text)
    assert code == EXIT_NOT_READY and "no usable inpainting bundle" in report["verdict"]


def test_library_checks_name_the_missing_file(tmp_path):
    loaded, file, problem = doctor.try_load(("libpolypforge-does-not-exist.so.9",))
    assert not loaded and file == "libpolypforge-does-not-exist.so.9" and "libpolypforge-does-not-exist.so.9" in problem
    if sys.platform.startswith("linux"):
        assert doctor.try_load(("libpolypforge-nope.so.1", "libc.so.6"))[:2] == (True, "libc.so.6")
        # a provider library that cannot load (here: not an ELF file) is reported with the loader's message
        capi = tmp_path / "capi"
        capi.mkdir()
        (capi / "libonnxruntime_providers_cuda.so").write_bytes(b"not a shared object")
        checks = doctor.check_provider_libraries(capi)
        assert [c.name for c in checks] == ["onnxruntime cuda provider"]
        assert not checks[0].loaded and "libonnxruntime_providers_cuda.so" in checks[0].problem


def test_gpu_build_with_missing_cuda_falls_back_in_the_verdict(models, tmp_path):
    report = doctor.run_doctor(output=tmp_path, verify_hashes=False)
    report.onnxruntime["flavour"] = "gpu (onnxruntime-gpu)"  # as onnxruntime-gpu would report it
    report.gpu_libraries = [doctor.LibraryCheck("cuDNN", False, "libcudnn.so.9", "libcudnn.so.9: cannot open shared object file")]
    report.problems.clear(), report.warnings.clear()
    doctor._judge(report)
    assert report.status == "warning" and "cuDNN does not load" in report.verdict and "CPU" in report.verdict


def test_doctor_imports_neither_torch_nor_qt(models, tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from engine.doctor import run_doctor; "
            "run_doctor(verify_hashes=False); heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'PySide6', 'diffusers', 'transformers', 'optimum'}); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_frozen_app_finds_bundles_in_its_models_folder(tmp_path, monkeypatch):
    app = tmp_path / "PolypForge"
    (app / "models" / "real-model").mkdir(parents=True)
    (app / "models" / "real-model" / "bundle.json").write_text("{}")
    (app / "_internal" / "exported_models" / "inside").mkdir(parents=True)
    monkeypatch.delenv("POLYPFORGE_MODELS", raising=False)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(app / "PolypForge"))
    monkeypatch.setattr(sys, "_MEIPASS", str(app / "_internal"), raising=False)
    assert bundle_format.bundles_folder() == app.resolve() / "models"
    assert bundle_format.find_bundle("real-model") == app.resolve() / "models" / "real-model"
    assert bundle_format.find_bundle("inside") == app / "_internal" / "exported_models" / "inside"
    with pytest.raises(bundle_format.BundleError, match="real-model"):
        bundle_format.find_bundle("absent")
    # $POLYPFORGE_MODELS still wins, and the app's own models folder stays searched
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("POLYPFORGE_MODELS", str(other))
    assert bundle_format.bundles_folder() == other
    assert bundle_format.find_bundle("real-model") == app.resolve() / "models" / "real-model"


def test_source_tree_lookup_unchanged(monkeypatch):
    monkeypatch.delenv("POLYPFORGE_MODELS", raising=False)
    assert not getattr(sys, "frozen", False)
    assert bundle_format.bundles_folder() == REPO / "exported_models"
    assert bundle_format.bundle_search_folders() == [REPO / "exported_models"]
    from engine.jobs.spec import DEFAULT_MODEL

    assert DEFAULT_MODEL == REPO / "exported_models" / "polypforge-compact"


def test_a_model_whose_recommended_judge_is_missing_is_a_warning(models, tmp_path, capsys):
    """The default model's bundle.json names the polyp judge (engine.judge.model_gate): without it, its jobs stop."""
    shutil.copytree(REPO / "exported_models" / "polypforge-compact", models / "polypforge-compact")
    code, text = _doctor(["--json", "--no-verify", "--output", str(tmp_path)], capsys)
    report = json.loads(text)
    by_name = {b["name"]: b for b in report["bundles"]}
    assert by_name["polypforge-compact"]["recommends_judge"] == "polyp-judge"
    assert code == EXIT_READY and any("recommends the judge polyp-judge" in w and "--no-judge" in w
                                      for w in report["warnings"]), report["warnings"]
    shutil.copytree(REPO / "exported_models" / "polyp-judge", models / "polyp-judge")
    code, text = _doctor(["--json", "--no-verify", "--output", str(tmp_path)], capsys)
    report = json.loads(text)
    assert not any("recommends the judge" in w for w in report["warnings"]) and report["status"] == "ok"


def test_doctor_counts_a_models_training_frames_and_finds_an_altered_list(models, tmp_path, capsys):
    shutil.copytree(REPO / "exported_models" / "polypforge-compact", models / "polypforge-compact")
    shutil.copytree(REPO / "exported_models" / "polyp-judge", models / "polyp-judge")
    code, text = _doctor(["--json", "--no-verify", "--output", str(tmp_path)], capsys)
    by_name = {b["name"]: b for b in json.loads(text)["bundles"]}
    assert by_name["polypforge-compact"]["training_frames"] == 968 and by_name["polyp-judge"]["training_frames"] is None
    listed = models / "polypforge-compact" / "training_frames.txt"
    listed.write_text(listed.read_text()[:-200])  # cut short
    code, text = _doctor(["--json", "--no-verify", "--output", str(tmp_path)], capsys)
    broken = {b["name"]: b for b in json.loads(text)["bundles"]}["polypforge-compact"]
    assert broken["integrity"] == "broken" and "training_frames.txt" in broken["problem"]
