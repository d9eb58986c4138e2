"""Pieces shared by the web app tests: a run folder in the documented format and free ports."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path


def write_run(workspace: Path, rid: str = "cpt/demo", *, steps: int = 10, status: str = "done",
              pid: int | None = None) -> Path:
    """A finished run folder as docs/run-format.md describes it (what the trainer writes)."""
    run = workspace / "models" / rid
    (run / "checkpoints").mkdir(parents=True)
    (run / ".forgellm-run").write_text("")
    now = time.time()
    events = [{"event": "start", "time": now, "step": 0, "total_steps": steps, "run_name": run.name,
               "training_type": "cpt", "fine_tune_type": "lora", "engine": "torch", "model": "tiny"}]
    for step in range(1, steps + 1):
        events.append({"event": "train", "time": now + step, "step": step, "loss": 3.0 - 0.1 * step,
                       "learning_rate": 1e-3, "tokens": 64, "trained_tokens": 64 * step, "tokens_per_second": 100.0,
                       "grad_norm": 1.0, "peak_memory_gb": 0.5, "elapsed": float(step)})
        if step % 5 == 0:
            events.append({"event": "eval", "time": now + step, "step": step, "val_loss": 3.1 - 0.1 * step,
                           "val_ppl": 20.0, "train_loss": 3.0 - 0.1 * step})
            name = f"step_{step:06d}"
            (run / "checkpoints" / name).mkdir()
            (run / "checkpoints" / name / "trainer_state.json").write_text(
                json.dumps({"step": step, "val_loss": 3.1 - 0.1 * step}))
            (run / "checkpoints" / "best.json").write_text(json.dumps({"checkpoint": name, "val_loss": 3.1 - 0.1 * step}))
            events.append({"event": "checkpoint", "time": now + step, "step": step,
                           "path": f"checkpoints/{name}", "val_loss": 3.1 - 0.1 * step})
    if status == "done":
        events.append({"event": "done", "time": now + steps, "step": steps, "status": "completed",
                       "best_checkpoint": f"step_{steps - steps % 5:06d}", "best_val_loss": 3.1 - 0.1 * steps,
                       "final_loss": 3.0 - 0.1 * steps})
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run / "status.json").write_text(json.dumps({"status": status, "pid": pid or 1, "step": steps, "updated": now}))
    (run / "config.yaml").write_text("model_name: tiny\n")
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
