"""Pieces shared by the web app tests: a run folder in the documented format and free ports."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

_HELD_LOCKS: list = []  # run locks this test process holds for runs it pretends to train


def write_run(
    workspace: Path,
    rid: str = "cpt/demo",
    *,
    steps: int = 10,
    status: str = "done",
    pid: int | None = None,
    qa: bool = False,
) -> Path:
    """A run folder written by the trainer's own writers (folder and lock, events, checkpoints,
    status); ``qa``: the evaluations also score two QA files (chat-facts: step/10 of 10 right,
    document-facts: step/5 of 5), as with eval_qa. ``status="running"`` with ``pid=os.getpid()``: this process keeps holding the run lock,
    as a live trainer does; with another pid the lock is released, as when a trainer was killed."""
    from forgellm.runs.events import MetricsWriter
    from forgellm.training.callbacks import StatusFile
    from forgellm.training.checkpoints import CheckpointStore
    from forgellm.training.run import prepare_folder

    run = workspace / "models" / rid
    run_lock = prepare_folder(run, overwrite=False)
    (run / "config.yaml").write_text(f"model_name: tiny\ntraining_type: {run.parent.name}\nmax_iterations: {steps}\n")
    writer = MetricsWriter(run / "metrics.jsonl")
    store = CheckpointStore(run, max_keep=1000)
    writer.write(
        "start",
        0,
        total_steps=steps,
        run_name=run.name,
        training_type="cpt",
        fine_tune_type="lora",
        engine="torch",
        model="tiny",
        trainable_params=1,
        total_params=1,
        world_size=1,
        global_batch_size=4,
    )
    for step in range(1, steps + 1):
        writer.write(
            "train",
            step,
            loss=3.0 - 0.1 * step,
            learning_rate=1e-3,
            tokens=64,
            trained_tokens=64 * step,
            tokens_per_second=100.0,
            grad_norm=1.0,
            peak_memory_gb=0.5,
            elapsed=float(step),
        )
        if step % 5 == 0:
            val = 3.1 - 0.1 * step
            scores = {}
            if qa:
                files = {"chat-facts": (step, 10), "document-facts": (step // 5, 5)}
                scores = {
                    "qa_accuracy": sum(c for c, _ in files.values()) / 15,
                    "qa_correct": sum(c for c, _ in files.values()),
                    "qa_total": 15,
                    "qa_files": {n: {"correct": c, "total": t, "accuracy": c / t} for n, (c, t) in files.items()},
                }
            writer.write("eval", step, val_loss=val, val_ppl=20.0, train_loss=3.0 - 0.1 * step, **scores)
            path = store.save(step, {"step": step, "val_loss": val}, lambda folder: None)
            writer.write("checkpoint", step, path=str(path.relative_to(run)), val_loss=val)
    if status == "done":
        writer.write(
            "done",
            steps,
            status="completed",
            best_checkpoint=f"step_{steps - steps % 5:06d}",
            best_val_loss=3.1 - 0.1 * steps,
            final_loss=3.0 - 0.1 * steps,
        )
    writer.close()
    StatusFile(run / "status.json", steps).write(status, steps)
    if status == "running" and pid == os.getpid():
        _HELD_LOCKS.append(run_lock)
    else:
        run_lock.release()
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_long_run(workspace: Path, rid: str, *, steps: int, best_step: int, eval_every: int = 100) -> Path:
    """A finished run of ``steps`` train events (no checkpoint folders): for the display limits.

    The training loss falls slowly with noise and dips to its minimum 0.05 at ``best_step``;
    the last point (step ``steps``) has the distinct value 0.777.
    """
    import random

    rng = random.Random(0)
    run = workspace / "models" / rid
    run.mkdir(parents=True)
    (run / ".forgellm-run").write_text("")
    now = time.time()
    lines = [
        json.dumps(
            {
                "event": "start",
                "time": now,
                "step": 0,
                "total_steps": steps,
                "training_type": "cpt",
                "fine_tune_type": "lora",
                "engine": "torch",
                "model": "tiny",
            }
        )
    ]
    for step in range(1, steps + 1):
        loss = 0.05 if step == best_step else 0.777 if step == steps else 2.0 - step / steps + rng.random() * 0.3
        lines.append(
            json.dumps(
                {
                    "event": "train",
                    "time": now + step,
                    "step": step,
                    "loss": loss,
                    "learning_rate": 1e-3 * (1 - step / steps),
                    "tokens_per_second": 90 + rng.random() * 20,
                    "peak_memory_gb": 0.5,
                    "elapsed": float(step),
                }
            )
        )
        if step % eval_every == 0:
            lines.append(
                json.dumps(
                    {
                        "event": "eval",
                        "time": now + step,
                        "step": step,
                        "val_loss": 2.2 - step / steps,
                        "val_ppl": 9.0 - step / steps,
                    }
                )
            )
    lines.append(
        json.dumps(
            {
                "event": "done",
                "time": now + steps,
                "step": steps,
                "status": "completed",
                "best_val_loss": 1.2,
                "final_loss": 0.777,
            }
        )
    )
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "status.json").write_text(json.dumps({"status": "done", "pid": 1, "step": steps, "updated": now}))
    return run


def descendants(pid: int) -> list[int]:
    """Every live descendant process of ``pid`` (Linux /proc), children first."""
    out: list[int] = []
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        children = [int(c) for task in tasks for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        return out
    for child in children:
        out += [child, *descendants(child)]
    return out


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def wait_for(condition, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


class StartedApp:
    """``forgellm start --no-browser`` in a workspace, as a user runs it; ``stop()`` sends SIGTERM.

    With ``token``, both servers require it (``$FORGELLM_TOKEN``); ``headers`` carry it.
    """

    def __init__(self, workspace: Path, *, token: str | None = None, timeout: float = 180.0):
        import subprocess
        import sys

        self.workspace = workspace
        self.server_port, self.web_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.log_path = workspace / "start.log"
        env = {**os.environ, "FORGELLM_HOME": str(workspace), "CI": "1"}
        env.pop("FORGELLM_TOKEN", None)
        if token:
            env["FORGELLM_TOKEN"] = token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "forgellm",
                    "start",
                    "--no-browser",
                    "--server-port",
                    str(self.server_port),
                    "--web-port",
                    str(self.web_port),
                ],
                cwd=workspace,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_for(lambda: self.server_status().get("up") is True, timeout, interval=0.5):
            self.stop()
            raise AssertionError(f"forgellm start did not come up in {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def server_status(self) -> dict:
        import httpx

        try:
            return httpx.get(f"{self.url}/api/server/status", headers=self.headers, timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def child(self, marker: str) -> int:
        """The pid of the direct child whose command line contains ``marker``."""
        pids = [p for p in descendants(self.process.pid) if marker in command_line(p)]
        assert pids, f"no child process running {marker!r}"
        return pids[0]

    def stop(self, timeout: float = 90.0) -> int | None:
        """SIGTERM, then the exit status (None if it did not exit in time; it is then killed)."""
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in [self.process.pid, *descendants(self.process.pid)]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()
            return None
