"""The run lock: one process writes a run folder at a time.

The trainer takes an exclusive ``flock`` on ``run.lock`` in the run folder for its whole life
and writes its PID, host and start time into the file for the messages of whoever is refused.
The operating system drops the lock when the process ends, however it ends, so a lock file
left by a killed trainer (a stale lock) never blocks anyone: only a held lock counts.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from forgellm.errors import ConflictError
from forgellm.runs.layout import LOCK_FILE

ORIGIN_ENV = "FORGELLM_RUN_ORIGIN"  # set by the web app for the trainers it starts


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run's lock, as its trainer wrote it."""

    pid: int
    host: str
    started: float
    origin: str = "cli"  # who started the trainer: cli | web (the web app adopts its own after a restart)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)) if self.started else "?"
        return f"process {self.pid} on {self.host} (since {when})"

    def how_to_stop(self) -> str:
        return (
            f"stop it first (Ctrl-C in its terminal, Stop in the web app, or `kill -TERM {self.pid}` on "
            f"{self.host}; it saves a checkpoint) or wait for it to end"
        )


class RunBusyError(ConflictError):
    """A live process holds the run's lock."""

    kind = "run_busy"

    def __init__(self, run_dir: Path, holder: LockHolder, action: str):
        self.holder = holder
        super().__init__(
            f"cannot {action} run {Path(run_dir).name}: it is being trained by {holder.describe()}; "
            f"{holder.how_to_stop()}"
        )


class RunLock:
    """``with RunLock(run_dir).acquire(): ...`` or `acquire` / `release`; refuses while held elsewhere."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self, action: str = "train") -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunBusyError(self.run_dir, _read_holder(self.path), action) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "origin": os.environ.get(ORIGIN_ENV, "cli"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(run_dir: Path) -> LockHolder | None:
    """The live process holding the run's lock, or None (no lock file, or a stale one)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(path)
    finally:
        os.close(fd)
    return None


def refuse_if_held(run_dir: Path, action: str) -> None:
    """RunBusyError when a live process holds the run's lock (before deleting, fusing, resuming...)."""
    found = holder(run_dir)
    if found is not None:
        raise RunBusyError(run_dir, found, action)


def stop_holder(run_dir: Path, signum: int = signal.SIGTERM, *, pid: int | None = None) -> LockHolder | None:
    """Signal the process holding the run's lock (its PID as written in the lock, checked to still
    hold it, so a reused PID is never signalled). None when nothing holds it, it runs on another
    host, or it is not ``pid`` (when given)."""
    found = holder(run_dir)
    if found is None or found.host != socket.gethostname() or (pid is not None and found.pid != pid):
        return None
    os.kill(found.pid, signum)
    return found


def _read_holder(path: Path) -> LockHolder:
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        data = {}
    return LockHolder(
        pid=int(data.get("pid") or 0),
        host=str(data.get("host") or "?"),
        started=float(data.get("started") or 0.0),
        origin=str(data.get("origin") or "cli"),
    )
