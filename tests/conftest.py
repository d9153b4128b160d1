"""Shared fixtures: tiny random-weight pipelines built here (no hub), and bundles exported from them with the
real `main.py export` path."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
sys.path.insert(0, str(REPO_ROOT))

# Hash caches and TensorRT engine caches go to a throwaway folder, never the developer's home.
os.environ.setdefault("POLYPFORGE_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "polypforge-test-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A seeded random-weight diffusers StableDiffusionInpaintPipeline folder (tiny shapes)."""
    from engine.export.random_pipeline import build_random_inpaint_pipeline

    return build_random_inpaint_pipeline(tmp_path_factory.mktemp("tiny_pipeline") / "pipe", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_pipeline_dir, tmp_path_factory) -> Path:
    """The tiny pipeline exported with `main.py export` (optimum's exporter, parity-checked)."""
    import main

    destination = tmp_path_factory.mktemp("tiny_bundle") / "bundle"
    assert main.main(["export", "--from", str(tiny_pipeline_dir), "--to", str(destination)]) == 0
    return destination


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may damage."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    return copy


def shared_data_or_skip() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture()
def messages(monkeypatch):
    """Message boxes captured instead of shown (desktop tests)."""
    from desktop.testing import MessageLog

    return MessageLog().install(monkeypatch)


@pytest.fixture()
def retrieval_db(tmp_path) -> Path:
    """A retrieval database built with `main.py db build` from generated polyp frames (demo DINOv2)."""
    import main
    from engine.samples import generate_sample_set

    generate_sample_set(tmp_path / "polyps", count=4, seed=1, with_polyps_every=1)
    database = tmp_path / "db"
    assert main.main(["db", "build", "--polyps", str(tmp_path / "polyps"), "--to", str(database)]) == 0
    return database


HOLD_LOCK = (
    "import sys\n"
    "from engine.jobs.output_lock import take_output_lock\n"
    "lock = take_output_lock(sys.argv[1], sys.argv[2])\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"  # holds the lock until the test closes stdin
    "lock.release()\n"
)


@pytest.fixture()
def lock_holder():
    """hold(folder, purpose="job") → the pid of another live process holding folder's job.lock."""
    import subprocess

    processes = []

    def hold(folder, purpose: str = "job") -> int:
        process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), purpose], cwd=REPO_ROOT,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process.pid

    yield hold
    for process in processes:
        process.stdin.close()
        process.wait(timeout=30)
