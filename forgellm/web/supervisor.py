"""``forgellm start``: the model server and the web app as child processes.

Children run in their own sessions, so a Ctrl-C in the terminal reaches only the supervisor,
which then stops each child by its own pid (SIGTERM, then SIGKILL after a grace period).
A child that dies is restarted, at most ``max_restarts`` times a minute. On Linux each child
also gets SIGTERM if the supervisor itself is killed, so nothing is left orphaned.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    restarts: deque = field(default_factory=deque)
    retry_at: float = 0.0  # monotonic time before which a dead child is not started again

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# Longer than the web app takes to stop its training runs (they save a checkpoint first).
STOP_GRACE_S = 45.0


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        *,
        max_restarts: int = 5,
        grace: float = STOP_GRACE_S,
        env: dict[str, str] | None = None,
    ):
        self.children = children
        self.max_restarts = max_restarts
        self.grace = grace
        self.env = env
        self.stopping = False

    def spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent
        )
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def start(self) -> None:
        for child in self.children:
            self.spawn(child)

    def request_stop(self, signum: int = signal.SIGTERM, frame=None) -> None:
        self.stopping = True

    def watch(self, poll: float = 0.5) -> int:
        """Restart children that die until a stop is requested; the exit status for the command."""
        while not self.stopping:
            for child in self.children:
                if self.stopping or child.alive():
                    continue
                code = child.process.returncode if child.process else None
                now = time.monotonic()
                if now < child.retry_at:
                    continue
                while child.restarts and now - child.restarts[0] > 60:
                    child.restarts.popleft()
                if len(child.restarts) >= self.max_restarts:
                    log.error(
                        "%s died %d times within a minute (last exit code %s); giving up",
                        child.name,
                        len(child.restarts) + 1,
                        code,
                    )
                    self.stop()
                    return 1
                child.restarts.append(now)
                # Back off: after the n-th restart within a minute, n seconds pass before another.
                child.retry_at = now + len(child.restarts)
                log.warning("%s exited with code %s; restarting it", child.name, code)
                self.spawn(child)
            time.sleep(poll)
        self.stop()
        return 0

    def stop(self) -> None:
        """SIGTERM every live child we started, wait up to ``grace`` seconds, SIGKILL what is left."""
        live = [(c, c.process) for c in self.children if c.process is not None and c.alive()]
        for child, process in live:
            log.info("stopping %s (pid %d)", child.name, process.pid)
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child, process in live:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) did not stop in %.0f s; killing it", child.name, process.pid, self.grace)
                process.kill()
                process.wait()


def environment() -> dict[str, str]:
    """The children's environment: ours, with the workspace pinned so both see the same one."""
    from forgellm.workspace import Workspace

    return {**os.environ, "FORGELLM_HOME": str(Workspace.current().root)}
