"""Training processes started from the web app.

A run is started by spawning ``forgellm train --config <written yaml>`` in its own process
(the web process never imports an engine). The job learns its run folder from the
``status.json`` whose ``pid`` is its process. Only processes started here are ever signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from forgellm.errors import ConflictError, NotFoundError
from forgellm.web.services import runs as run_files
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

LOG_TAIL_BYTES = 4000


@dataclass
class Job:
    id: str
    process: subprocess.Popen
    config_path: Path
    log_path: Path
    started: float = field(default_factory=time.time)
    run_path: Path | None = None
    stop_requested: bool = False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


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
        others = [run_files.run_id(self.workspace, p) for p in run_files.run_dirs(self.workspace)
                  if run_files.read_status(p).get("status") == "running"
                  and not any(j.run_path == p for j in self.jobs.values())]
        return ours + others

    def start(self, config: dict[str, Any], *, allow_concurrent: bool = False) -> Job:
        with self._lock:
            active = self.active_runs()
            if active and not allow_concurrent:
                raise ConflictError(
                    f"a training run is already active ({', '.join(active)}); stop it first, "
                    "or send \"allow_concurrent\": true to run both at once")
            stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{len(self.jobs)}"
            folder = self.workspace.configs_dir / "web"
            folder.mkdir(parents=True, exist_ok=True)
            self.workspace.logs_dir.mkdir(parents=True, exist_ok=True)
            config_path = folder / f"train-{stamp}.yaml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            log_path = self.workspace.logs_dir / f"train-{stamp}.log"
            env = {**os.environ, "FORGELLM_HOME": str(self.workspace.root), "PYTHONUNBUFFERED": "1"}
            with open(log_path, "wb") as out:
                process = subprocess.Popen([*self.command, "--config", str(config_path)], cwd=self.workspace.root,
                                           env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            job = Job(id=f"job-{stamp}", process=process, config_path=config_path, log_path=log_path)
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
                raise NotFoundError(
                    f"no training process of this web app runs {target!r}; a run started elsewhere is "
                    "stopped where it was started (Ctrl-C in its terminal)")
        elif not live:
            raise ConflictError("no training run started from this web app is active")
        for job in live:
            job.stop_requested = True
            job.process.send_signal(signal.SIGTERM)
        return live

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every job we started and wait for them (web app shutdown): no orphans."""
        live = [j for j in self.jobs.values() if j.alive]
        for job in live:
            job.process.send_signal(signal.SIGTERM)
        deadline = time.time() + timeout
        for job in live:
            try:
                job.process.wait(max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()

    def refresh(self) -> None:
        """Find the run folder of jobs that do not know it yet (status.json names the pid)."""
        pending = {j.process.pid: j for j in self.jobs.values() if j.run_path is None}
        if not pending:
            return
        for path in run_files.run_dirs(self.workspace):
            pid = (run_files.read_status(path) if (path / "status.json").exists() else {}).get("pid")
            if pid in pending:
                pending.pop(pid).run_path = path

    def run_of(self, job: Job) -> str | None:
        return run_files.run_id(self.workspace, job.run_path) if job.run_path else None

    def describe(self, job: Job) -> dict[str, Any]:
        code = job.process.poll()
        state = "running" if code is None else ("stopped" if job.stop_requested else ("done" if code == 0 else "failed"))
        out: dict[str, Any] = {"id": job.id, "pid": job.process.pid, "state": state, "exit_code": code,
                               "run": self.run_of(job), "config_path": str(job.config_path),
                               "log_path": str(job.log_path), "started": job.started}
        if state == "failed":
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
