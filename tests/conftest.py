"""Shared fixtures: tiny random-weight pipelines built here (no hub), and bundles exported from them with the
real `main.py export` path."""

from __future__ import annotations

import faulthandler
import os
import shutil
import sys
import tempfile
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


# ------------------------------------------------------------------------------------------- a stuck test
# pytest-timeout ends a test stuck for `timeout` seconds (pyproject.toml) by ending its process: under pytest-xdist
# the worker's own output is lost, so the report would only name the test. Shortly before, faulthandler (a C-level
# watchdog: it fires inside a deadlock too) writes every thread's stack to a file the controller prints at the end.
HANG_DUMPS = "POLYPFORGE_TEST_HANG_DUMPS"
DUMP_AHEAD_SECONDS = 30


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist): the workers inherit it
        os.environ[HANG_DUMPS] = tempfile.mkdtemp(prefix="polypforge-test-hangs-")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    try:
        timeout = float(item.config.getini("timeout") or 0)
    except ValueError:  # pytest-timeout not installed: no timeout to dump ahead of
        timeout = 0.0
    folder = os.environ.get(HANG_DUMPS)
    if not folder or timeout <= DUMP_AHEAD_SECONDS:
        yield
        return
    with open(Path(folder) / f"{os.getpid()}.txt", "w") as dump:
        dump.write(f"{item.nodeid} ran over {timeout - DUMP_AHEAD_SECONDS:.0f} s; its threads then:\n")
        dump.flush()
        faulthandler.dump_traceback_later(timeout - DUMP_AHEAD_SECONDS, file=dump)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
            dump.truncate(0)


def pytest_terminal_summary(terminalreporter, config):
    folder = os.environ.get(HANG_DUMPS)
    if hasattr(config, "workerinput") or not folder or not Path(folder).is_dir():
        return
    for path in sorted(Path(folder).glob("*.txt")):
        text = path.read_text(errors="replace")
        if "Thread" in text:
            terminalreporter.section("stuck test", sep="+")
            terminalreporter.write(text)
    shutil.rmtree(folder, ignore_errors=True)


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
