"""Training processes started from the web app.

A run is started by spawning ``forgellm train --config <written yaml>`` in its own process
(the web process never imports an engine), marked as the web app's (``FORGELLM_RUN_ORIGIN=web``).
The job learns its run folder from the run lock its trainer holds (`forgellm.runs.lock`).
After a restart of the web app its trainers are found again by their locks and adopted: they
are stopped through the lock (the PID it names, once checked to hold it). Runs started
elsewhere (the CLI) are never signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from forgellm.errors import ConflictError, ForgeError, NotFoundError
from forgellm.runs import lock
from forgellm.runs.layout import run_dirs, run_kind
from forgellm.runs.summary import read_status
from forgellm.web.services import runs as run_files
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

LOG_TAIL_BYTES = 4000
#: How long a start waits for runs the user has just stopped to finish saving and exit.
STOPPING_GRACE_S = 20.0


@dataclass
class Job:
    id: str
    pid: int
    process: subprocess.Popen | None  # None: adopted after a restart of the web app (not our child)
    config_path: Path | None
    log_path: Path | None
    started: float = field(default_factory=time.time)
    run_path: Path | None = None
    stop_requested: bool = False

    @property
    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        found = lock.holder(self.run_path) if self.run_path else None
        return found is not None and found.pid == self.pid

    def terminate(self) -> None:
        """SIGTERM: the trainer saves a checkpoint and ends its run as stopped."""
        self.stop_requested = True
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
        elif self.run_path is not None:
            lock.stop_holder(self.run_path, pid=self.pid)


class TrainingJobs:
    def __init__(self, workspace: Workspace, command: list[str] | None = None):
        self.workspace = workspace
        # The trainer command; tests may point it elsewhere only through the same CLI.
        self.command = command or [sys.executable, "-m", "forgellm", "train"]
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def active_runs(self) -> list[str]:
        """Ids of runs training now: ours (even before their folder exists) and any other live run."""
        self.refresh()
        ours = [self.run_of(job) or job.id for job in self.jobs.values() if job.alive]
        others = [
            run_files.run_id(self.workspace, p)
            for p in run_dirs(self.workspace)
            if lock.holder(p) is not None and not any(j.run_path == p for j in self.jobs.values())
        ]
        return ours + others

    def _wait_for_stopping(self, timeout: float) -> None:
        """A run the user stopped shows 'stopped' as soon as its trainer records it, while the
        process still saves and exits: give such processes (only those) a moment to go."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            live = [j for j in self.jobs.values() if j.alive]
            if not live or not all(j.stop_requested for j in live):
                return
            time.sleep(0.2)

    def start(self, config: dict[str, Any], *, allow_concurrent: bool = False) -> Job:
        with self._lock:
            if not allow_concurrent:
                self._wait_for_stopping(STOPPING_GRACE_S)
            active = self.active_runs()
            if active and not allow_concurrent:
                stopping = [self.run_of(j) or j.id for j in self.jobs.values() if j.alive and j.stop_requested]
                if stopping and len(stopping) == len(active):
                    raise ConflictError(
                        f"the run you stopped ({', '.join(stopping)}) is still saving its checkpoint and "
                        f"exiting; try again in a moment"
                    )
                raise ConflictError(
                    f"a training run is already active ({', '.join(active)}); stop it first, "
                    "or send \"allow_concurrent\": true to run both at once"
                )
            if config.get("run_name"):  # the trainer refuses too; say it here, before a job exists
                parent = (
                    self.workspace.path(config["output_dir"])
                    if config.get("output_dir")  # confined by the route
                    else self.workspace.models(run_kind(config.get("training_type") or "cpt"))
                )
                lock.refuse_if_held(parent / config["run_name"], "start")
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{len(self.jobs)}"
            folder = self.workspace.configs_dir / "web"
            folder.mkdir(parents=True, exist_ok=True)
            self.workspace.logs_dir.mkdir(parents=True, exist_ok=True)
            config_path = folder / f"train-{stamp}.yaml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            log_path = self.workspace.logs_dir / f"train-{stamp}.log"
            env = {
                **os.environ,
                "FORGELLM_HOME": str(self.workspace.root),
                "PYTHONUNBUFFERED": "1",
                lock.ORIGIN_ENV: "web",
            }
            with open(log_path, "wb") as out:
                process = subprocess.Popen(
                    [*self.command, "--config", str(config_path)],
                    cwd=self.workspace.root,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            job = Job(id=f"job-{stamp}", pid=process.pid, process=process, config_path=config_path, log_path=log_path)
            self.jobs[job.id] = job
            log.info("started training job %s (pid %d)", job.id, process.pid)
            return job

    def stop(self, target: str | None = None) -> list[Job]:
        """SIGTERM our job for ``target`` (a job id or run id), or every live job of ours.

        The trainer saves a checkpoint on SIGTERM and ends its run as stopped.
        """
        self.refresh()
        live = [j for j in self.jobs.values() if j.alive]
        if target:
            live = [j for j in live if target in (j.id, self.run_of(j))]
            if not live:
                raise NotFoundError(f"no training process of this web app runs {target!r}" + self._elsewhere(target))
        elif not live:
            raise ConflictError("no training run started from this web app is active")
        for job in live:
            job.terminate()
        return live

    def _elsewhere(self, target: str) -> str:
        """How to stop ``target`` when another program (the CLI) trains it."""
        try:
            found = lock.holder(run_files.run_path(self.workspace, target))
        except ForgeError:
            found = None
        if found is None:
            return ""
        return (
            f"; it is trained by {found.describe()}, started from the command line: stop it there "
            f"(Ctrl-C in its terminal, or `kill -TERM {found.pid}` on {found.host})"
        )

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every job we started and wait for them (web app shutdown): no orphans."""
        live = [j for j in self.jobs.values() if j.alive]
        for job in live:
            job.terminate()
        deadline = time.time() + timeout
        for job in live:
            if job.process is None:  # adopted: not our child, so wait for its lock to go
                while job.alive and time.time() < deadline:
                    time.sleep(0.2)
                continue
            try:
                job.process.wait(max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()

    def refresh(self) -> None:
        """Find the run folder of jobs that do not know it yet (the run lock names the pid), and
        adopt the trainers this web app started before a restart (their lock says origin web)."""
        pending = {j.pid: j for j in self.jobs.values() if j.run_path is None}
        known = {j.pid for j in self.jobs.values()}
        host = socket.gethostname()
        for path in run_dirs(self.workspace):
            found = lock.holder(path)
            if found is None:
                continue
            if found.pid in pending:
                pending.pop(found.pid).run_path = path
            elif found.pid not in known and found.origin == "web" and found.host == host:
                job = Job(
                    id=f"job-adopted-{found.pid}",
                    pid=found.pid,
                    process=None,
                    config_path=None,
                    log_path=None,
                    started=found.started,
                    run_path=path,
                )
                self.jobs[job.id] = job
                known.add(found.pid)
                log.info("adopted training job %s of run %s (started before this web app restarted)", job.id, path)

    def run_of(self, job: Job) -> str | None:
        return run_files.run_id(self.workspace, job.run_path) if job.run_path else None

    def describe(self, job: Job) -> dict[str, Any]:
        code = job.process.poll() if job.process is not None else None
        if job.alive:
            state = "stopping" if job.stop_requested else "running"
        elif job.process is None:  # adopted: its run's status tells how it ended
            state = read_status(job.run_path).get("status", "failed") if job.run_path else "failed"
        else:
            state = "stopped" if job.stop_requested else ("done" if code == 0 else "failed")
        out: dict[str, Any] = {
            "id": job.id,
            "pid": job.pid,
            "state": state,
            "exit_code": code,
            "run": self.run_of(job),
            "adopted": job.process is None,
            "config_path": str(job.config_path) if job.config_path else None,
            "log_path": str(job.log_path) if job.log_path else None,
            "started": job.started,
        }
        if state == "failed" and job.log_path is not None:
            out["log_tail"] = _tail(job.log_path)
        return out

    def status(self) -> dict[str, Any]:
        self.refresh()
        jobs = sorted(self.jobs.values(), key=lambda j: j.started, reverse=True)
        return {"active": self.active_runs(), "jobs": [self.describe(j) for j in jobs]}


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - LOG_TAIL_BYTES, 0))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
