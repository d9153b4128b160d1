"""One job per output folder: ``job.lock`` says who is writing it (pid, host, start time, what for).

Taken before anything is written there (by a batch job, whether started from the terminal or the app, and by
review for the moment an accept/reject rewrites the folder), released at the end. The file is created with
O_EXCL, so of two processes only one gets it; the other is told, in one line, who holds it.

A lock left behind by a run that cannot release it (kill -9, a crash, a power cut) must never block the
resume. Its holder is judged gone when:
- on this machine: its pid is not running, or runs a different process (the pid was reused: its start time
  differs), or the machine has restarted since (another boot id);
- on another machine (a shared drive): the lock has not been renewed for ``OTHER_HOST_STALE_SECONDS`` (a
  holder renews it every ``HEARTBEAT_SECONDS``, so a long job is never taken for a dead one);
- or the curator says so: ``--break-lock``.
A gone holder's lock is taken over (the summary notes it). Taking over is a rename of the stale file to a
private name followed by a fresh O_EXCL create, so two processes that both judge the same lock stale cannot
both end up holding the folder.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.dataset.job_folder import LOCK_NAME
from engine.errors import InputError, OutputLocked

HEARTBEAT_SECONDS = 30.0
OTHER_HOST_STALE_SECONDS = 15 * 60.0
UNREADABLE_GRACE_SECONDS = 30.0  # a lock file is empty only for the instant between its create and write
ATTEMPTS = 5


@dataclass
class LockHolder:
    pid: int
    host: str
    purpose: str  # "job", "review"
    started: str  # UTC, for people
    started_epoch: float
    token: str  # tells this holder's file from a later one
    command: str = ""
    machine_id: str | None = None
    boot_id: str | None = None
    process_started: str | None = None  # the pid's start time (Linux clock ticks since boot)

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> "LockHolder | None":
        try:
            raw = json.loads(data.decode("utf-8"))
            known = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
            holder = cls(**known)
        except (ValueError, TypeError, AttributeError):
            return None
        return holder if isinstance(holder.pid, int) and isinstance(holder.host, str) else None

    def describe(self) -> str:
        command = f", {self.command[:80]}" if self.command else ""
        return f"a {self.purpose} (pid {self.pid} on {self.host}, since {self.started}{command})"

    def same_machine(self) -> bool:
        if self.host != socket.gethostname():
            return False
        ours = _machine_id()
        return self.machine_id is None or ours is None or self.machine_id == ours


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _machine_id() -> str | None:
    return _read_text("/etc/machine-id") or _read_text("/var/lib/dbus/machine-id")


def _boot_id() -> str | None:
    return _read_text("/proc/sys/kernel/random/boot_id")


def process_start(pid: int) -> str | None:
    """When a process started (Linux: clock ticks since boot, field 22 of /proc/PID/stat); None elsewhere."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None or ")" not in stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _windows_pid_alive(pid: int) -> bool:
    # os.kill(pid, 0) would terminate the process on Windows: ask the kernel instead.
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def this_process(purpose: str) -> LockHolder:
    now = time.time()
    return LockHolder(
        pid=os.getpid(), host=socket.gethostname(), purpose=purpose,
        started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)), started_epoch=round(now, 3),
        token=uuid.uuid4().hex, command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        machine_id=_machine_id(), boot_id=_boot_id(), process_started=process_start(os.getpid()),
    )


def why_gone(holder: LockHolder, renewed_seconds_ago: float) -> str | None:
    """Why the holder of a lock can no longer be writing (a sentence), or None if it may be."""
    if holder.same_machine():
        ours = _boot_id()
        if holder.boot_id and ours and holder.boot_id != ours:
            return "this machine has restarted since"
        if not pid_alive(holder.pid):
            return f"process {holder.pid} is no longer running"
        now_started = process_start(holder.pid)
        if holder.process_started and now_started and now_started != holder.process_started:
            return f"process {holder.pid} is no longer running (the pid now belongs to another process)"
        return None
    if renewed_seconds_ago > OTHER_HOST_STALE_SECONDS:
        return (f"not renewed for {renewed_seconds_ago / 60:.0f} min (a holder on another machine renews it every "
                f"{HEARTBEAT_SECONDS:.0f} s; over {OTHER_HOST_STALE_SECONDS / 60:.0f} min it counts as gone)")
    return None


@dataclass
class LockState:
    """What a lock file holds now: its bytes, the holder they name (None if unreadable), its age."""

    data: bytes
    holder: LockHolder | None
    renewed_seconds_ago: float

    def gone_reason(self) -> str | None:
        if self.holder is None:
            if self.renewed_seconds_ago > UNREADABLE_GRACE_SECONDS:
                return "the lock file is unreadable debris"
            return None
        return why_gone(self.holder, self.renewed_seconds_ago)

    def who(self, path: Path) -> str:
        if self.holder is None:
            return f"a process that is creating {path} right now"
        return self.holder.describe()


def read_lock(output: str | Path) -> LockState | None:
    path = Path(output) / LOCK_NAME
    try:
        with open(path, "rb") as handle:
            data = handle.read()
            modified = os.fstat(handle.fileno()).st_mtime
    except FileNotFoundError:
        return None
    return LockState(data, LockHolder.from_bytes(data), max(0.0, time.time() - modified))


def held_message(output: Path, state: LockState, what: str) -> str:
    return (f"{output}: {what}: {state.who(output / LOCK_NAME)} is writing this folder; wait for it to end, "
            f"or if it is gone, rerun with --break-lock (or delete {output / LOCK_NAME})")


def lock_problem(output: str | Path, what: str = "cannot start") -> str | None:
    """The one-line message a new job would get because a live holder has the folder; None if it is free."""
    output = Path(output).expanduser()
    state = read_lock(output)
    if state is None or state.gone_reason() is not None:
        return None
    return held_message(output, state, what)


class OutputLock:
    """A held job.lock; ``release()`` (or leaving the ``with`` block) removes it if it is still ours."""

    def __init__(self, output: Path, holder: LockHolder, created_folder: bool, notes: list[str]):
        self.output = output
        self.path = output / LOCK_NAME
        self.holder = holder
        self.notes = notes  # e.g. "took over the lock of … (process 42 is no longer running)"
        self._created_folder = created_folder
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew, name=f"lock heartbeat {output}", daemon=True)
        self._heartbeat.start()

    def still_ours(self) -> bool:
        state = read_lock(self.output)
        return state is not None and state.holder is not None and state.holder.token == self.holder.token

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            if not self.still_ours():
                return  # broken by someone else (--break-lock): theirs now, leave it alone
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self.still_ours():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        if self._created_folder:
            try:
                self.output.rmdir()  # a job that could not start leaves no empty folder behind
            except OSError:
                pass  # not empty: the job wrote there

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _set_aside_if_unchanged(path: Path, judged: bytes, token: str) -> bool:
    """Move the stale lock out of the way, unless it is no longer the file that was judged stale."""
    aside = path.with_name(f".{path.name}.{token}.stale")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return False  # another process took it over first
    try:
        if aside.read_bytes() == judged:
            return True
        try:  # a new holder's lock came in between: put it back
            os.link(aside, path)
        except OSError:
            pass
        return False
    finally:
        aside.unlink(missing_ok=True)


def take_output_lock(output: str | Path, purpose: str, break_lock: bool = False, what: str = "cannot start") -> OutputLock:
    """Hold the output folder for this process, taking over a lock whose holder is gone; OutputLocked when a
    live holder has it. Creates the folder if needed (InputError when that is impossible)."""
    output = Path(output).expanduser()
    created = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{output}: output folder is not writable ({exc.strerror or exc})") from None
    path = output / LOCK_NAME
    holder = this_process(purpose)
    notes: list[str] = []
    for _ in range(ATTEMPTS):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            state = read_lock(output)
            if state is None:
                continue  # released meanwhile
            reason = state.gone_reason()
            if reason is None and break_lock:
                reason = "--break-lock"
            if reason is None:
                raise OutputLocked(held_message(output, state, what)) from None
            if _set_aside_if_unchanged(path, state.data, holder.token):
                notes.append(f"took over the lock of {state.who(path)}: {reason}")
            continue
        except OSError as exc:
            raise InputError(f"{output}: output folder is not writable ({exc.strerror or exc})") from None
        try:
            os.write(fd, holder.to_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        return OutputLock(output, holder, created, notes)
    raise OutputLocked(f"{path}: could not take the lock: other processes keep taking it; try again")
