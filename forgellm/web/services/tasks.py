"""Model maintenance commands started from the web app (fuse, publish), each its own process.

They run the same CLI a user would type; their output goes to a log under ``logs/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.web.services.training_jobs import _tail
from forgellm.workspace import Workspace


@dataclass
class Task:
    id: str
    kind: str
    argv: list[str]
    process: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        code = self.process.poll()
        state = "running" if code is None else ("done" if code == 0 else "failed")
        return {
            "id": self.id,
            "kind": self.kind,
            "command": " ".join(["forgellm", *self.argv]),
            "state": state,
            "exit_code": code,
            "started": self.started,
            "log_tail": _tail(self.log_path)[-2000:],
        }


class Tasks:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.tasks: dict[str, Task] = {}

    def start(self, kind: str, argv: list[str]) -> Task:
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{len(self.tasks)}"
        self.workspace.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.workspace.logs_dir / f"{kind}-{stamp}.log"
        env = {**os.environ, "FORGELLM_HOME": str(self.workspace.root)}
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "forgellm", *argv],
                cwd=self.workspace.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        task = Task(id=f"{kind}-{stamp}", kind=kind, argv=argv, process=process, log_path=log_path)
        self.tasks[task.id] = task
        return task

    def list(self) -> list[dict[str, Any]]:
        return [t.describe() for t in sorted(self.tasks.values(), key=lambda t: t.started, reverse=True)]

    def stop_all(self) -> None:
        for task in self.tasks.values():
            if task.process.poll() is None:
                task.process.terminate()
                task.process.wait(30)
