"""The batch job on a Ray cluster (backend "ray"): the same plan, seeds and files as a local run.

The frames are sharded over long-lived Ray Data actors (a fixed-size actor pool); each actor opens the bundle
once in its own process (onnxruntime sessions are created there, never pickled) and runs
engine/jobs/frame_work.py on every frame it is handed — the same code the local loop calls. A frame and its
variants are one task, so the frame is VAE-encoded once. Workers write variant files atomically into the
shared output folder; only this process (the driver) appends manifest lines, in whatever order frames
finish, and rebuilds the annotation files at the end (runner.py).

- Threads are set explicitly: onnxruntime intra-op threads and OMP_NUM_THREADS (Ray sets it to 1 otherwise).
  With gpus_per_worker, Ray gives each actor its GPU(s) through CUDA_VISIBLE_DEVICES and the job's provider
  (auto: TensorRT → CUDA → CPU) uses them.
- A worker that dies (kill -9, out of memory) is restarted by Ray and the frames it held are retried, up to
  WORKER_DEATH_RETRIES times each; a frame still without a result is then a failed line saying so.
- Before any work, one probe per node checks that it sees the output folder (a file the driver just wrote
  there), can write it, and can read the input folder and the bundle.
- Progress: actors report frame starts and steps through a Ray queue; records arrive with the results.

ray is imported only in this module, and only when the backend is used.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
import warnings
from pathlib import Path

from engine.errors import Cancelled, InputError, PolypForgeError
from engine.jobs.frame_work import FrameWork, check_bundle_fits, failed_record, open_pipeline, open_proposer

RAY_MISSING = 'backend ray needs Ray, which is not installed: pip install -e ".[ray]"'
WORKER_DEATH_RETRIES = 2  # retries of a frame whose worker died; then it is recorded as failed
TASKS_IN_FLIGHT_PER_WORKER = 2  # one running, one waiting: no idle gap between frames
PROGRESS_POLL_SECONDS = 0.25
PROBE_TIMEOUT_SECONDS = 120


class WorkerFailed(PolypForgeError):
    """A Ray worker raised something that is not a per-frame failure (a full disk, a bug): the job stops."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra brings both)
    except ImportError:
        raise InputError(RAY_MISSING) from None
    return ray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RayBackend:
    """The driver's side: joins (or starts) the cluster, sizes the workers, schedules frames, collects results."""

    def __init__(self, spec, ray, bundle, started_here: bool):
        self.spec = spec
        self.ray = ray
        self.bundle = bundle
        self.prompts = dict(bundle.manifest["prompts"])
        self.provider = spec.provider
        self.notes: list[str] = []
        self.started_here = started_here
        self.workers = 1
        self.threads = 1
        self.gpus = float(spec.gpus_per_worker or 0)
        self.nodes: list[dict] = []
        self.stats: dict[str, dict] = {}  # per actor: host, node, pids, frames, variants, busy seconds
        self.stage_by_pid: dict[int, dict] = {}
        self.providers: set[str] = set()

    @classmethod
    def connect(cls, spec) -> RayBackend:
        ray = import_ray()
        from engine.bundle import read_bundle

        bundle = read_bundle(spec.model)  # hashes verified here: a damaged bundle stops the job before Ray starts
        check_bundle_fits(spec, bundle)
        address = spec.ray_address or os.environ.get("RAY_ADDRESS")
        started_here = False
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, logging_level=logging.ERROR)
                else:
                    _start_local_instance(ray)
            except Exception as exc:  # ConnectionError, RuntimeError, ValueError… for a wrong or dead address
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise InputError(f"cannot join {where}: {_first_line(exc)}") from None
            started_here = True
        backend = cls(spec, ray, bundle, started_here)
        try:
            backend._size_workers()
        except PolypForgeError:
            backend.close()
            raise
        return backend

    # ------------------------------------------------------------------ sizing
    def _size_workers(self) -> None:
        """Workers and threads per worker: as asked, else filling the cluster (one GPU worker per GPU asked)."""
        ray, spec = self.ray, self.spec
        self.nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        biggest_node = max((n["Resources"].get("CPU", 0) for n in self.nodes), default=0)
        if self.gpus > 0:
            if gpus < self.gpus:
                raise InputError(f"gpus_per_worker {self.gpus:g}: the Ray cluster has {gpus:g} GPU(s)")
            self.workers = spec.workers or max(1, int(gpus // self.gpus))
            self.threads = spec.threads or 1
        elif spec.workers:
            self.workers = spec.workers
            self.threads = spec.threads or max(1, int(cpus // spec.workers))
        else:
            self.threads = spec.threads or 1
            self.workers = max(1, int(cpus // self.threads))
        self.threads = max(1, min(self.threads, int(biggest_node) or 1))
        fit = sum(self._workers_fitting(n) for n in self.nodes)
        if fit < self.workers:
            asked = f"{self.workers} worker(s) × {self.threads} CPU(s)" + (f" + {self.gpus:g} GPU(s)" if self.gpus else "")
            raise InputError(f"{asked} do not fit the Ray cluster ({cpus:g} CPUs, {gpus:g} GPUs on "
                             f"{len(self.nodes)} node(s)): ask fewer --workers or --threads")

    def _workers_fitting(self, node: dict) -> int:
        resources = node["Resources"]
        count = int(resources.get("CPU", 0) // self.threads)
        if self.gpus > 0:
            count = min(count, int(resources.get("GPU", 0) // self.gpus))
        return count

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPU each" if self.gpus else ""
        return (f"Ray: {self.workers} worker(s) × {self.threads} thread(s){gpus} on {len(self.nodes)} node(s), "
                f"provider {self.spec.provider}")

    # ------------------------------------------------------------------ shared folder
    def check_output(self, spec) -> None:
        """Every node that can host a worker sees the output folder (a file written here) and can write it."""
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = secrets.token_hex(8)
        probe_name = f".polypforge-ray-probe-{token}.tmp"  # swept with the other temp files if left behind
        (spec.output / probe_name).write_text(token, encoding="utf-8")
        probe = ray.remote(probe_node)
        nodes = [n for n in self.nodes if self._workers_fitting(n) > 0]
        try:
            refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(os.getcwd(), str(spec.output), probe_name, token, str(spec.input), str(self.bundle.root))
                    for n in nodes]
            results = ray.get(refs, timeout=PROBE_TIMEOUT_SECONDS)
        except Exception as exc:
            self.close()
            raise InputError(f"{spec.output}: could not check the output folder from the Ray nodes: {_first_line(exc)}") from None
        finally:
            (spec.output / probe_name).unlink(missing_ok=True)
        failing = [r for r in results if r["problem"]]
        if failing:
            self.close()
            first = failing[0]
            more = f" (and {len(failing) - 1} more node(s))" if len(failing) > 1 else ""
            raise InputError(f"{spec.output}: Ray node {first['host']} ({first['ip']}) {first['problem']}{more}; "
                             "every worker needs the output folder on a filesystem shared by all nodes, at the same path")

    # ------------------------------------------------------------------ schedule + collect
    def run(self, tasks, collect, cancelled, proposer=None, retrieval_db_id=None, captions_file=None) -> None:
        del proposer  # each worker opens its own
        if not tasks:
            return
        ray = self.ray
        from ray.util.queue import Queue

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the job's own progress bar says it
        context.max_errored_blocks = -1  # a frame whose worker kept dying is reported below, not a stopped job
        _quiet_ray_data_console()
        progress = Queue(actor_options={"num_cpus": 0})  # unbounded: drained every PROGRESS_POLL_SECONDS
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_task_retries is only reachable through ray_remote_args
            dataset = ray.data.from_items([{"task": task} for task in tasks], override_num_blocks=len(tasks)).map_batches(
                FrameActor,
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=self.workers, max_tasks_in_flight_per_actor=TASKS_IN_FLIGHT_PER_WORKER),
                fn_constructor_kwargs={"spec": self.spec, "retrieval_db_id": retrieval_db_id, "captions_file": captions_file,
                                       "threads": self.threads, "driver_cwd": os.getcwd(), "progress": progress},
                num_cpus=self.threads,
                num_gpus=self.gpus or None,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": str(self.threads)}},
                max_task_retries=WORKER_DEATH_RETRIES,
            )
        results: queue.Queue = queue.Queue()
        stop = threading.Event()

        def pump() -> None:
            try:
                for row in dataset.iter_rows():
                    results.put(("row", row["result"]))
                    if stop.is_set():
                        break
            except BaseException as exc:  # noqa: BLE001  (handed to the main thread)
                results.put(("error", exc))
            finally:
                results.put(("end", None))

        thread = threading.Thread(target=pump, name="ray-results", daemon=True)
        thread.start()
        received: set[str] = set()
        try:
            while True:
                self._relay_progress(progress, collect)
                if cancelled():
                    raise Cancelled("cancelled; frames in flight on the workers are redone on resume")
                try:
                    kind, value = results.get(timeout=PROGRESS_POLL_SECONDS)
                except queue.Empty:
                    continue
                if kind == "end":
                    break
                if kind == "error":
                    raise WorkerFailed(f"a Ray worker failed: {_first_line(value)}")
                outcome = json.loads(value)
                received.add(outcome["frame"])
                self._collect(outcome, collect)
            self._relay_progress(progress, collect)
            for task in tasks:
                if task.frame.rel not in received:
                    reason = (f"its Ray worker died each time it ran this frame ({WORKER_DEATH_RETRIES + 1} tries: "
                              "killed, or out of memory)")
                    for item in task.items:
                        collect(failed_record(item, self.spec, self.bundle, reason))
        finally:
            stop.set()
            try:
                progress.shutdown()
            except Exception:  # noqa: BLE001  (the cluster may be going away)
                pass

    def _relay_progress(self, progress, collect) -> None:
        try:
            waiting = progress.qsize()
            messages = progress.get_nowait_batch(waiting) if waiting else []
        except Exception:  # noqa: BLE001  (progress is best effort; results do not depend on it)
            return
        for kind, frame_rel, variant, step, steps, worker in messages:
            label = f"{worker['host']}:{worker['pid']}"
            if kind == "frame":
                self._worker_stats(worker)  # a worker killed before its first result still counts as a restart
                collect.frame_started(frame_rel, worker=label)
            else:
                collect.step_of(frame_rel, variant, step, steps, worker=label)

    def _worker_stats(self, worker: dict) -> dict:
        stats = self.stats.setdefault(worker["actor"], {"host": worker["host"], "node": worker["node"], "pids": [],
                                                        "frames": 0, "variants": 0, "busy_seconds": 0.0})
        if worker["pid"] not in stats["pids"]:
            stats["pids"].append(worker["pid"])
        return stats

    def _collect(self, outcome: dict, collect) -> None:
        worker = outcome["worker"]
        stats = self._worker_stats(worker)
        stats["frames"] += 1
        stats["busy_seconds"] += outcome["seconds"]
        self.stage_by_pid[worker["pid"]] = outcome["stage_seconds"]
        self.providers.add(outcome["provider"])
        if outcome["provider_note"] and outcome["provider_note"] not in self.notes:
            self.notes.append(outcome["provider_note"])
        for record in outcome["records"]:
            stats["variants"] += record["status"] == "ok"
            collect(record)
        if outcome["error"]:
            raise WorkerFailed(f"Ray worker {worker['host']}:{worker['pid']} failed on {outcome['frame']}: {outcome['error']}")

    # ------------------------------------------------------------------ end
    def stage_seconds(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for stages in self.stage_by_pid.values():
            for name, seconds in stages.items():
                total[name] = total.get(name, 0.0) + seconds
        return total

    def finish(self, summary) -> None:
        """Per-worker throughput and nodes into the summary; leave the cluster (stop it if started here)."""
        summary.provider = ",".join(sorted(self.providers)) or self.spec.provider
        for actor, stats in sorted(self.stats.items()):
            busy = stats["busy_seconds"]
            summary.workers.append({"worker": actor, **stats, "busy_seconds": round(busy, 3),
                                    "variants_per_minute": round(60 * stats["variants"] / busy, 2) if busy else None})
        restarts = sum(len(s["pids"]) - 1 for s in self.stats.values())
        if restarts:
            summary.notes.append(f"{restarts} Ray worker restart(s) (a worker process died); its frames were retried")
        for note in self.notes:
            if note not in summary.notes:
                summary.notes.append(note)
        self.close()

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
        self.started_here = False


def _start_local_instance(ray) -> None:
    """A Ray instance on this machine whose workers run at the priority a local job runs at: Ray starts
    them at nice 15 by default, which on a busy PC makes the same job many times slower than without Ray."""
    previous = os.environ.get("RAY_worker_niceness")
    os.environ["RAY_worker_niceness"] = "0"
    try:
        ray.init(include_dashboard=False, logging_level=logging.ERROR)
    finally:
        if previous is None:
            os.environ.pop("RAY_worker_niceness", None)
        else:
            os.environ["RAY_worker_niceness"] = previous


def _quiet_ray_data_console() -> None:
    """Ray Data's INFO lines stay in its log file (the session's ray-data.log), off the terminal."""
    for handler in logging.getLogger("ray.data").handlers:
        if not getattr(handler, "baseFilename", None):
            handler.setLevel(logging.ERROR)


def probe_node(driver_cwd: str, output: str, probe_name: str, token: str, input_dir: str, bundle_dir: str) -> dict:
    """Runs on one node (as a Ray task): what a worker there would see of the job's folders."""
    import ray

    base = Path(driver_cwd) if Path(driver_cwd).is_dir() else Path.cwd()
    out = base / output
    here = {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address(), "problem": None}
    try:
        seen = (out / probe_name).read_text(encoding="utf-8")
    except OSError:
        seen = None
    if seen != token:
        here["problem"] = f"does not see {output} (a file the driver wrote there is missing)"
        return here
    test = out / f".polypforge-ray-write-{secrets.token_hex(4)}.tmp"
    try:
        test.write_bytes(b"ok")
        test.unlink()
    except OSError as exc:
        here["problem"] = f"cannot write {output} ({exc.strerror or exc})"
        return here
    if not (base / input_dir).is_dir():
        here["problem"] = f"cannot read the input folder {input_dir}"
    elif not (base / bundle_dir / "bundle.json").is_file():
        here["problem"] = f"cannot read the bundle {bundle_dir}"
    return here


class FrameActor:
    """One Ray worker: opens the bundle once in its process, then runs frame_work on each frame it is handed.

    It works in the driver's folder when that exists on its node, so relative paths mean what they mean to
    the driver (the probe has checked that the output folder is the same one)."""

    def __init__(self, spec, retrieval_db_id, captions_file, threads: int, driver_cwd: str, progress):
        import ray

        if driver_cwd and os.path.isdir(driver_cwd):
            os.chdir(driver_cwd)
        context = ray.get_runtime_context()
        self.identity = {"actor": context.get_actor_id()[:12], "pid": os.getpid(), "host": socket.gethostname(),
                         "node": ray.util.get_node_ip_address()}
        self.progress = progress
        self.pipeline = open_pipeline(spec, threads=threads)
        self.work = FrameWork(spec, self.pipeline, open_proposer(spec, threads=threads), retrieval_db_id,
                              captions_file=captions_file)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        return {"result": np.array([self._run(task) for task in batch["task"]], dtype=object)}

    def _tell(self, message: tuple) -> None:
        """Fire and forget: Queue.put_nowait would wait for the queue actor's answer on every step."""
        try:
            self.progress.actor.put_nowait.remote(message)
        except Exception:  # noqa: BLE001  (a gone progress queue never stops the work)
            pass

    def _run(self, task) -> str:
        started = time.perf_counter()
        records: list[dict] = []
        self._tell(("frame", task.frame.rel, -1, 0, 0, self.identity))
        error = None
        try:
            self.work.run(task, records.append,
                          on_step=lambda item, step, steps: self._tell(("step", item.frame.rel, item.variant, step, steps, self.identity)))
        except Exception as exc:  # noqa: BLE001  (not a per-item failure: the driver stops the job, as a local run would)
            error = f"{type(exc).__name__}: {exc}"
        for record in records:
            record["worker"] = self.identity
        return json.dumps({
            "frame": task.frame.rel, "records": records, "error": error, "worker": self.identity,
            "seconds": time.perf_counter() - started, "stage_seconds": dict(self.pipeline.stage_seconds),
            "provider": self.pipeline.provider, "provider_note": self.pipeline.provider_note,
        }, ensure_ascii=False)
