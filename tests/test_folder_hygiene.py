"""Folder hygiene: a job never eats its own output, one job per output folder (a lock whose dead holder never
blocks the resume), and the streamed bookkeeping writes exactly what the whole-list writers wrote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import main
from conftest import REPO_ROOT
from engine.samples import generate_frame, generate_sample_set
from test_batch_robustness import _batch_command, _snapshot


def run_batch(*args) -> int:
    return main.main(["--batch", "--quiet", "--no-judge", "--steps", "2", *map(str, args)])


def plain_frames(folder: Path, count: int, seed: int = 0) -> Path:
    """A plain folder of frames (no images/ + masks/ layout), one nested subfolder."""
    for index in range(count):
        frame, _ = generate_frame(seed=seed + index, width=160, height=128, polyps=1)
        path = folder / ("site_b" if index % 2 else "") / f"frame_{index:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(path)
    return folder


def manifest(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]


def summary(output: Path) -> dict:
    return json.loads((output / "summary.json").read_text())


# ------------------------------------------------------------------------------------- output placement
def test_output_inside_the_input_run_twice_plans_the_same_variants_as_an_output_elsewhere(tmp_path, capsys):
    frames = plain_frames(tmp_path / "frames", 4)
    inside = frames / "augmented"
    args = ("--input", frames, "--mask-source", "random", "--variants", 1)
    assert run_batch(*args, "--output", inside) == 0
    first = manifest(inside)
    assert len(first) == 4 and summary(inside)["planned"] == 4
    assert run_batch(*args, "--output", inside) == 0  # the second run: its own output is not taken for frames
    assert summary(inside)["planned"] == 4 and summary(inside)["reused"] == 4
    assert [r["key"] for r in manifest(inside)] == [r["key"] for r in first]
    assert not any(r["source_frame"].startswith("augmented/") for r in manifest(inside))
    assert "the job's own output folder is inside the input" in capsys.readouterr().err
    elsewhere = tmp_path / "elsewhere"
    assert run_batch(*args, "--output", elsewhere) == 0
    assert _snapshot(inside) == _snapshot(elsewhere)  # data.yaml's own path aside, the same bytes


@pytest.mark.parametrize("where,message", [
    ("{input}", "the output folder is the input folder"),
    ("{parent}", "the output folder holds the input folder"),
    ("{input}/images", "an output folder named images/ inside the input"),
])
def test_output_equal_to_or_above_the_input_is_refused_in_one_line(tmp_path, capsys, where, message):
    frames = plain_frames(tmp_path / "data" / "frames", 2)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    output = where.format(input=frames, parent=frames.parent)
    assert run_batch("--input", frames, "--output", output, "--mask-source", "random") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_polypforge_dataset_as_input_gives_no_frames_unless_asked_then_says_they_are_synthetic(tmp_path, capsys):
    real = plain_frames(tmp_path / "mixed", 2, seed=10)
    earlier = real / "earlier"
    assert run_batch("--input", plain_frames(tmp_path / "other", 2, seed=20), "--output", earlier,
                     "--mask-source", "random", "--variants", 2) == 0
    earlier_records = manifest(earlier)
    assert [r["status"] for r in earlier_records] == ["ok"] * 4
    capsys.readouterr()

    # the dataset itself as the input: refused, in one line that names the flag
    assert run_batch("--input", earlier, "--output", tmp_path / "o1") == 2
    err = capsys.readouterr().err.strip()
    assert "is the output of a PolypForge job" in err and "--include-synthetic" in err and len(err.splitlines()) == 1

    # inside the input: its variants, masks, YOLO copies and contact sheet are not frames
    assert run_batch("--input", real, "--output", tmp_path / "o2", "--mask-source", "random") == 0
    assert sorted(r["source_frame"] for r in manifest(tmp_path / "o2")) == ["frame_00.png", "site_b/frame_01.png"]
    assert all("source_synthetic" not in r for r in manifest(tmp_path / "o2"))
    assert "holding a PolypForge job's output (synthetic frames) were not read" in capsys.readouterr().err

    # asked for: exactly the accepted variants of its manifest, and each new line says which line made its source
    output = tmp_path / "o3"
    assert run_batch("--input", real, "--output", output, "--mask-source", "box", "--include-synthetic") == 0
    records = manifest(output)
    synthetic = [r for r in records if r["source_frame"].startswith("earlier/")]
    assert sorted(r["source_frame"] for r in records if r not in synthetic) == ["frame_00.png", "site_b/frame_01.png"]
    assert sorted(r["source_frame"] for r in synthetic) == sorted(f"earlier/{r['image']}" for r in earlier_records)
    lines = (earlier / "manifest.jsonl").read_text().splitlines()
    for record in synthetic:
        made_by = record["source_synthetic"]
        assert made_by["manifest"] == "earlier/manifest.jsonl"
        line = json.loads(lines[made_by["line"] - 1])
        assert line["key"] == made_by["key"] and f"earlier/{line['image']}" == record["source_frame"]
        assert made_by["source_frame"] == line["source_frame"] and made_by["bundle_id"] == line["bundle_id"]
        assert record["status"] == "ok" and record["label_source"] == "polypforge-manifest:earlier/manifest.jsonl"
        assert len(record["instances"]) == len(line["instances"])  # a box generated at each earlier polyp
    coco = json.loads((output / "annotations" / "instances.json").read_text())
    flagged = {i["file_name"] for i in coco["images"] if i.get("source_synthetic")}
    assert flagged == {r["image"] for r in synthetic}
    # the flag is part of what the folder holds: resuming without it is refused
    assert run_batch("--input", real, "--output", output, "--mask-source", "box") == 2
    assert "include_synthetic" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- one job per folder
def test_a_second_job_is_refused_naming_the_holder_and_a_killed_run_resumes_to_the_same_dataset(tmp_path, capsys):
    generate_sample_set(tmp_path / "in", count=4, seed=2)
    reference = tmp_path / "reference"
    subprocess.run(_batch_command(tmp_path / "in", reference), check=True, capture_output=True, timeout=600)
    assert not (reference / "job.lock").exists()  # released at the end

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_batch_command(tmp_path / "in", interrupted), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    lines = interrupted / "manifest.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (lines.exists() and len(lines.read_bytes().splitlines()) >= 2):
        time.sleep(0.05)
    try:
        # a second job on the same folder while the first runs: one line naming the holder, exit 2
        second = _batch_command(tmp_path / "in", interrupted)[2:]
        assert main.main(second) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pid {process.pid} on {socket.gethostname()}" in err
        assert "is writing this folder" in err and "--break-lock" in err
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # kill -9: the lock stays behind
        process.wait()
    left = json.loads((interrupted / "job.lock").read_text())
    assert left["pid"] == process.pid
    assert 2 <= len(lines.read_bytes().splitlines()) < 12, "the kill must land mid-run"

    resumed = subprocess.run(_batch_command(tmp_path / "in", interrupted), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"took over the lock of a job (pid {process.pid}" in resumed.stderr
    assert "is no longer running" in resumed.stderr
    assert not (interrupted / "job.lock").exists() and not list(interrupted.glob(".job.lock*"))
    assert _snapshot(interrupted) == _snapshot(reference)


def test_review_is_refused_while_a_job_holds_the_folder(tmp_path, lock_holder):
    from engine.errors import OutputLocked
    from engine.jobs.review import set_review

    output = tmp_path / "out"
    assert run_batch("--input", plain_frames(tmp_path / "frames", 2), "--output", output, "--mask-source", "random") == 0
    before = (output / "manifest.jsonl").read_bytes()
    pid = lock_holder(output)
    with pytest.raises(OutputLocked, match=f"cannot accept or reject now: a job \\(pid {pid} on "):
        set_review(output, [manifest(output)[0]["key"]], accepted=False)
    assert (output / "manifest.jsonl").read_bytes() == before and not (output / "rejected").exists()


def test_a_job_that_cannot_start_leaves_no_folder_and_no_lock(tmp_path, capsys):
    frames = plain_frames(tmp_path / "frames", 1)
    assert run_batch("--input", frames, "--output", tmp_path / "new", "--model", tmp_path) == 2
    assert "bundle.json" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------------- the lock itself
def _write_lock(folder: Path, **changes) -> None:
    from engine.jobs.output_lock import this_process

    folder.mkdir(parents=True, exist_ok=True)
    holder = this_process("job")
    for key, value in changes.items():
        setattr(holder, key, value)
    (folder / "job.lock").write_bytes(holder.to_bytes())


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("changes,reason", [
    ({"pid": "DEAD"}, "is no longer running"),
    ({"pid": "PARENT", "process_started": "1"}, "the pid now belongs to another process"),
    ({"boot_id": "00000000-0000-0000-0000-000000000000"}, "this machine has restarted since"),
])
def test_a_lock_whose_holder_on_this_machine_is_gone_is_taken_over(tmp_path, changes, reason):
    from engine.jobs.output_lock import take_output_lock

    if "boot_id" in changes and not Path("/proc/sys/kernel/random/boot_id").exists():
        pytest.skip("no boot id on this system")
    if "process_started" in changes and not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("no process start times on this system")
    resolved = {key: {"DEAD": _dead_pid(), "PARENT": os.getppid()}.get(value, value) for key, value in changes.items()}
    _write_lock(tmp_path / "out", **resolved)
    with take_output_lock(tmp_path / "out", "job") as lock:
        assert len(lock.notes) == 1 and reason in lock.notes[0]
        assert json.loads((tmp_path / "out" / "job.lock").read_text())["token"] == lock.holder.token
    assert not (tmp_path / "out" / "job.lock").exists()


def test_a_live_holder_is_never_taken_over_without_break_lock(tmp_path, lock_holder):
    from engine.errors import OutputLocked
    from engine.jobs.output_lock import take_output_lock

    pid = lock_holder(tmp_path / "out")
    with pytest.raises(OutputLocked, match=f"pid {pid} on {socket.gethostname()}"):
        take_output_lock(tmp_path / "out", "job")
    with take_output_lock(tmp_path / "out", "job", break_lock=True) as lock:
        assert "--break-lock" in lock.notes[0] and f"pid {pid}" in lock.notes[0]


def test_a_lock_from_another_machine_counts_as_gone_only_past_the_age_limit(tmp_path):
    from engine.errors import OutputLocked
    from engine.jobs.output_lock import OTHER_HOST_STALE_SECONDS, take_output_lock

    output = tmp_path / "out"
    _write_lock(output, host="scanner-room-pc", pid=4242, machine_id="other")
    with pytest.raises(OutputLocked, match="pid 4242 on scanner-room-pc"):
        take_output_lock(output, "job")
    old = time.time() - OTHER_HOST_STALE_SECONDS - 60
    os.utime(output / "job.lock", (old, old))
    with take_output_lock(output, "job") as lock:
        assert "not renewed for" in lock.notes[0]


def test_an_unreadable_lock_blocks_only_while_it_may_be_being_written(tmp_path):
    from engine.errors import OutputLocked
    from engine.jobs.output_lock import UNREADABLE_GRACE_SECONDS, take_output_lock

    output = tmp_path / "out"
    output.mkdir()
    (output / "job.lock").write_bytes(b"")
    with pytest.raises(OutputLocked, match="creating"):
        take_output_lock(output, "job")
    old = time.time() - UNREADABLE_GRACE_SECONDS - 5
    os.utime(output / "job.lock", (old, old))
    with take_output_lock(output, "job") as lock:
        assert "unreadable debris" in lock.notes[0]


def test_of_processes_racing_for_a_stale_lock_exactly_one_gets_it(tmp_path):
    _write_lock(tmp_path / "out", pid=_dead_pid())
    race = ("import sys, time\n"
            "from engine.errors import OutputLocked\n"
            "from engine.jobs.output_lock import take_output_lock\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "try:\n"
            "    lock = take_output_lock(sys.argv[1], 'job')\n"
            "except OutputLocked:\n"
            "    print('refused')\n"
            "else:\n"
            "    print('took'); sys.stdout.flush(); time.sleep(3); lock.release()\n")
    start = time.time() + 3.0  # all four are past their imports by then
    racers = [subprocess.Popen([sys.executable, "-c", race, str(tmp_path / "out"), str(start)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert outcomes == ["refused", "refused", "refused", "took"]
    assert not (tmp_path / "out" / "job.lock").exists()


def test_the_holder_renews_its_lock_and_release_leaves_a_successors_lock_alone(tmp_path, monkeypatch):
    from engine.jobs import output_lock

    monkeypatch.setattr(output_lock, "HEARTBEAT_SECONDS", 0.05)
    lock = output_lock.take_output_lock(tmp_path / "out", "job")
    old = time.time() - 3600
    os.utime(lock.path, (old, old))
    deadline = time.time() + 10
    while time.time() < deadline and time.time() - lock.path.stat().st_mtime > 60:
        time.sleep(0.05)
    assert time.time() - lock.path.stat().st_mtime < 60  # renewed: another machine would see it alive
    _write_lock(tmp_path / "out", pid=4242, host="elsewhere")  # someone broke it (--break-lock) and holds it now
    lock.release()
    assert json.loads(lock.path.read_text())["host"] == "elsewhere"


# ------------------------------------------------------------------------------------- streamed bookkeeping
def _records(count: int) -> list[dict]:
    records = []
    for index in range(count):
        instances = [] if index % 4 == 3 else [
            {"bbox": [10.0 + index, 12.0, 30.5, 20.25], "shape": "polygon" if index % 2 else "box", "origin": "generated",
             "polygons": [[10.0 + index, 12.0, 40.5, 12.0, 25.0, 32.25]] if index % 2 else [], "area": 300.0},
            {"bbox": [50.0, 60.0, 10.0, 10.0], "shape": "box", "origin": "kvasir-bboxes", "polygons": [], "area": 0.0}]
        records.append({"key": f"ünï/f{index}.png#0", "image": f"images/train/f{index:02d}.png", "status": "ok",
                        "source_frame": f"ünï/f{index}.png", "split": "train" if index % 3 else "val",
                        "width": 160, "height": 128, "instances": instances, "removed": []})
    return records


def test_the_streamed_coco_file_is_byte_for_byte_the_whole_dict_dump(tmp_path):
    from engine.dataset.coco_writer import CocoWriter, build_coco, write_coco

    path = tmp_path / "annotations" / "instances.json"
    for records in ([], _records(1), _records(7), [r | {"instances": []} for r in _records(3)]):
        write_coco(path, iter(records))
        assert path.read_bytes() == (json.dumps(build_coco(records), ensure_ascii=False, indent=1) + "\n").encode()
    kept = path.read_bytes()
    writer = CocoWriter(path)
    writer.add(_records(1)[0])
    writer.abort()  # a rebuild that fails half-way leaves the file as it was, and no temp file
    assert path.read_bytes() == kept and sorted(p.name for p in path.parent.iterdir()) == ["instances.json"]


def test_the_incremental_yolo_rebuild_equals_a_fresh_one_and_rewrites_only_what_changed(tmp_path):
    from engine.dataset.yolo_writer import write_yolo_detect, write_yolo_segment

    def dataset(folder: Path, records: list[dict]) -> None:
        for record in records:
            image = folder / record["image"]
            image.parent.mkdir(parents=True, exist_ok=True)
            if not image.exists():
                image.write_bytes(record["image"].encode() * 10)

    def tree(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes().replace(str(folder).encode(), b"OUT")
                for p in sorted(folder.rglob("*")) if p.is_file() and p.parts[len(folder.parts)] in ("labels", "yolo-seg", "data.yaml")}

    first = _records(6)
    incremental = tmp_path / "incremental"
    dataset(incremental, first)
    write_yolo_detect(incremental, first)
    write_yolo_segment(incremental, first)
    unchanged = incremental / "labels" / "train" / "f01.txt"
    stamp = unchanged.stat().st_mtime_ns
    os.utime(unchanged, ns=(stamp - 10**9, stamp - 10**9))
    # then: one variant rejected, one relabelled, one image regenerated (a new file under the same name)
    second = [r for r in first if r["key"] != first[2]["key"]]
    second[3] = second[3] | {"instances": []}
    regenerated = incremental / second[0]["image"]
    regenerated.unlink()
    regenerated.write_bytes(b"new pixels")
    write_yolo_detect(incremental, second)
    write_yolo_segment(incremental, second)

    fresh = tmp_path / "fresh"
    dataset(fresh, second)
    shutil.copyfile(regenerated, fresh / second[0]["image"])
    write_yolo_detect(fresh, second)
    write_yolo_segment(fresh, second)
    assert tree(incremental) == tree(fresh)
    assert unchanged.stat().st_mtime_ns == stamp - 10**9  # the same rows: not rewritten
    link = incremental / "yolo-seg" / second[0]["image"]
    assert link.stat().st_ino == regenerated.stat().st_ino and link.read_bytes() == b"new pixels"
    assert not (incremental / "labels" / first[2]["image"].replace("images/", "", 1).replace(".png", ".txt")).exists()


def test_the_manifest_rewrite_keeps_each_keys_latest_line_in_plan_order(tmp_path):
    from engine.dataset.manifest import Manifest

    manifest_file = Manifest(tmp_path)
    lines = [{"key": "b#0", "status": "failed", "reason": "x", "source_frame": "b"},
             {"key": "a#0", "status": "ok", "image": "images/train/a.png", "n": "ü"},
             {"key": "b#0", "status": "ok", "image": "images/train/b.png"},
             {"key": "z#0", "status": "ok", "image": "images/train/z.png"}]  # not in the plan any more
    for line in lines:
        manifest_file.append(line)
    with open(manifest_file.path, "ab") as handle:
        handle.write(b'{"key": "c#0", "status": "o')  # torn by a kill
    index = manifest_file.index()
    assert index.damaged == 1 and set(index.entries) == {"a#0", "b#0", "z#0"}
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "images" / "train" / "b.png").write_bytes(b"x")
    assert index.done_keys(tmp_path) == {"b#0"}  # ok lines count as done only with their image on disk
    tally = manifest_file.rewrite_in_order(["b#0", "a#0", "c#0"])
    assert [json.loads(l) for l in manifest_file.path.read_text().splitlines()] == [lines[2], lines[1]]
    assert tally.counts == {"ok": 2} and tally.failures == []
