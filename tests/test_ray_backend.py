"""`--backend ray` on a local Ray instance (2 CPUs, one or two actors, the demo bundle): the dataset equals a
local run's byte for byte, also after a worker actor or the driver is killed mid-run and the job is rerun;
a folder the workers do not share stops the job with one line; malformed frames fail as in a local run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT
from engine.samples import generate_frame, generate_sample_set
from test_batch_robustness import _snapshot

STEPS = 2
JOB = {"mask_source": "random", "variants": 2, "steps": STEPS, "seed": 4}
# Every test of this module on one pytest-xdist worker (`make test` distributes by group): one local Ray instance on
# the two cores at a time, started once, instead of one per worker side by side.
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module; workers at normal priority, as the backend starts its own."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_worker_niceness"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        os.environ.pop("RAY_worker_niceness", None)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """Three sample frames (Kvasir layout, some with polyps) and three malformed ones."""
    root = tmp_path_factory.mktemp("ray_frames")
    generate_sample_set(root, count=3, seed=3, with_polyps_every=2)
    frame, (mask,) = generate_frame(seed=1, width=160, height=128, polyps=1)
    (root / "images" / "zero_bytes.jpg").write_bytes(b"")
    (root / "images" / "text.jpg").write_text("this is not a JPEG")
    Image.fromarray(frame).save(root / "images" / "wrong_size_mask.png")
    for stem, array in (("zero_bytes", mask), ("text", mask), ("wrong_size_mask", mask[:100, :100])):
        Image.fromarray(array.astype(np.uint8) * 255).save(root / "masks" / f"{stem}.png")
    return root


@pytest.fixture(scope="module")
def local_run(frames, tmp_path_factory):
    """An uninterrupted local run: (summary, comparable dataset)."""
    from engine.jobs import build_spec, run_job

    output = tmp_path_factory.mktemp("local") / "out"
    return run_job(build_spec({"input": frames, "output": output, **JOB})), comparable(output)


@pytest.fixture(scope="module")
def reference(local_run) -> dict:
    return local_run[1]


@pytest.fixture(scope="module")
def sharded_run(ray_address, frames, tmp_path_factory):
    """The same job on two Ray workers: (summary, events, output folder)."""
    from engine.jobs import run_job

    output = tmp_path_factory.mktemp("sharded") / "out"
    events = []
    return run_job(ray_spec(frames, output, workers=2), on_event=events.append), events, output


def comparable(output: Path) -> dict[str, bytes]:
    """Every file's bytes; the manifest without timings and the worker that made each variant."""
    files = _snapshot(output)
    manifest = json.loads(files["manifest.jsonl"])
    for record in manifest:
        record.pop("worker", None)
    files["manifest.jsonl"] = json.dumps(manifest, sort_keys=True).encode()
    return files


def ray_spec(frames: Path, output: Path, **extra):
    from engine.jobs import build_spec

    return build_spec({"input": frames, "output": output, **JOB, "backend": "ray", **extra})


def test_sharded_run_equals_the_local_run(sharded_run, reference):
    summary, events, output = sharded_run
    assert summary.status == "failures" and summary.ok == 6  # the malformed frames fail (next test)
    assert comparable(output) == reference
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert all(r["worker"]["pid"] != os.getpid() and r["worker"]["node"] for r in records)
    assert sum(w["variants"] for w in summary.workers) == 6
    # Ray may hand every frame to one worker: a rate only where the worker made something
    assert all(w["variants_per_minute"] > 0 for w in summary.workers if w["variants"])
    assert {"started", "frame", "step", "variant", "failed", "finished"} <= {e.kind for e in events}
    assert [e.done for e in events if e.kind in ("variant", "failed")] == list(range(1, 13))


def test_malformed_frames_fail_as_in_a_local_run(sharded_run, local_run):
    summary = sharded_run[0]
    assert sorted(summary.failures, key=str) == sorted(local_run[0].failures, key=str)
    assert {f["frame"] for f in summary.failures} == {"zero_bytes.jpg", "text.jpg", "wrong_size_mask.png"}
    assert all(f["reason"] for f in summary.failures)


def test_a_killed_worker_is_restarted_and_the_dataset_is_unchanged(ray_address, frames, reference, tmp_path):
    from engine.jobs import run_job

    killed = []

    def kill_the_first_worker(event):
        if event.kind == "frame" and not killed:
            pid = int(event.worker.rsplit(":", 1)[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = run_job(ray_spec(frames, tmp_path / "out", workers=1), on_event=kill_the_first_worker)
    assert killed and summary.status == "failures" and summary.ok == 6
    (worker,) = summary.workers
    assert killed[0] in worker["pids"] and len(worker["pids"]) == 2  # the actor was restarted in a new process
    assert any("restart" in note for note in summary.notes)
    assert comparable(tmp_path / "out") == reference


def _cli(frames: Path, output: Path, ray_address: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "main.py"), "--batch", "--quiet", "--input", str(frames), "--output",
            str(output), "--mask-source", "random", "--variants", "2", "--steps", str(STEPS), "--seed", "4",
            "--backend", "ray", "--ray-address", ray_address, "--workers", "1",
            "--no-judge"]  # as ray_spec (the engine's JobSpec): the job the local reference ran


def test_a_killed_driver_then_a_rerun_equals_the_local_run(ray_address, frames, reference, tmp_path):
    from engine.jobs import run_job

    output = tmp_path / "out"
    driver = subprocess.Popen(_cli(frames, output, ray_address), cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = output / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and driver.poll() is None:
        if manifest.exists() and len(manifest.read_bytes().splitlines()) >= 2:
            break
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    lines_at_kill = len(manifest.read_bytes().splitlines())
    assert 2 <= lines_at_kill < 12, "the kill must land mid-run"
    summary = run_job(ray_spec(frames, output, workers=1))
    assert summary.status == "failures" and summary.reused >= 2  # what the killed driver recorded is kept
    assert comparable(output) == reference


def test_an_output_folder_the_workers_do_not_share_stops_the_job_with_one_line(ray_address, frames, tmp_path):
    """The driver sees its own folder (a tmpfs mounted in its private mount namespace); the workers, outside
    that namespace, see the empty folder underneath: what a node-local path on a cluster looks like."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root to give the driver a folder the workers cannot see")
    output = tmp_path / "out"
    output.mkdir()
    command = " ".join(f"'{part}'" for part in _cli(frames, output, ray_address))
    completed = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs none '{output}' && exec {command}"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    if "mount" in completed.stderr and completed.returncode != 2:
        pytest.skip(f"no private mount here: {completed.stderr.strip()}")
    assert completed.returncode == 2, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "does not see" in errors[0] and "shared by all nodes" in errors[0], completed.stderr
    assert not any(output.iterdir())  # no worker wrote anything there


def test_ray_options_without_the_ray_backend_are_refused_in_one_line(frames, tmp_path, capsys):
    import main

    code = main.main(["--batch", "--input", str(frames), "--output", str(tmp_path / "o"), "--workers", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: workers apply to backend ray only (add --backend ray)"


def test_a_frame_whose_worker_always_dies_is_failed_after_its_retries(ray_address, tmp_path):
    """The worker is killed each time it starts the frame (many steps: the kill lands inside it)."""
    from engine.jobs import build_spec, run_job
    from engine.jobs.ray_backend import WORKER_DEATH_RETRIES

    generate_sample_set(tmp_path / "in", count=1, seed=8, with_polyps_every=0)
    killed = []

    def kill_at_every_start(event):
        if event.kind == "frame":
            pid = int(event.worker.rsplit(":", 1)[1])
            if pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    spec = build_spec({"input": tmp_path / "in", "output": tmp_path / "out", "mask_source": "random", "steps": 40,
                       "backend": "ray", "workers": 1})
    summary = run_job(spec, on_event=kill_at_every_start)
    assert len(killed) == WORKER_DEATH_RETRIES + 1
    assert summary.status == "failures" and summary.failed == 1
    assert "died each time it ran this frame" in summary.failures[0]["reason"]


def test_more_workers_than_the_cluster_holds_cannot_start(ray_address, frames, tmp_path):
    from engine.jobs import JobCannotStart, run_job

    with pytest.raises(JobCannotStart, match=r"3 worker\(s\) × 1 CPU\(s\) do not fit the Ray cluster \(2 CPUs"):
        run_job(ray_spec(frames, tmp_path / "out", workers=3, threads=1))
    assert not (tmp_path / "out").exists()  # refused before the output folder is touched


def test_a_sharded_transplant_job_equals_the_local_run(ray_address, frames, tmp_path):
    """Transplants on Ray workers: each worker reads its donors from the pool's paths, the bytes are the local
    run's."""
    from engine.jobs import build_spec, run_job

    values = {"input": frames, "mode": "transplant", "harmonize": "model", "strength": 0.4, "variants": 2,
              "steps": STEPS, "seed": 4}
    local = run_job(build_spec({**values, "output": tmp_path / "local"}))
    sharded = run_job(build_spec({**values, "output": tmp_path / "ray", "backend": "ray", "workers": 2}))
    assert local.ok == sharded.ok >= 4
    assert comparable(tmp_path / "ray") == comparable(tmp_path / "local")
