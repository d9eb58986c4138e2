"""Run folders with crafted curves for the analysis, dashboard and publishing tests, written by the
trainer's own writers (folder, metrics events, checkpoints), so they are in the real format."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from forgellm.runs.events import MetricsWriter, make_event
from forgellm.training.checkpoints import CheckpointStore
from forgellm.training.run import prepare_folder


def curve(
    steps: int, *, start: float = 3.0, floor: float = 1.5, tau: float = 100.0, noise: float = 0.0, seed: int = 0
) -> np.ndarray:
    """An exponentially decaying loss with optional multiplicative noise."""
    t = np.arange(1, steps + 1)
    clean = floor + (start - floor) * np.exp(-t / tau)
    return clean * (1 + noise * np.random.default_rng(seed).standard_normal(steps))


def make_events(
    losses: Iterable[float],
    *,
    val: dict[int, float] | None = None,
    eval_train: dict[int, float] | None = None,
    checkpoints: Iterable[int] = (),
    tokens_per_second: Iterable[float] | None = None,
    total_steps: int | None = None,
    done: bool = True,
    qa: dict[int, dict[str, tuple[int, int]]] | None = None,
) -> list[dict[str, Any]]:
    """``qa``: per evaluation step, ``{QA file: (correct, total)}``, scored as eval_qa does."""
    losses = list(losses)
    tps = list(tokens_per_second) if tokens_per_second is not None else [1000.0] * len(losses)
    events: list[dict[str, Any]] = [
        {
            "event": "start",
            "time": 0.0,
            "step": 0,
            "total_steps": total_steps or len(losses),
            "engine": "torch",
            "fine_tune_type": "lora",
            "run_name": "r",
            "training_type": "cpt",
            "model": "default",
            "trainable_params": 1,
            "total_params": 1,
            "world_size": 1,
            "global_batch_size": 1,
        }
    ]
    val, eval_train, ckpts = val or {}, eval_train or {}, set(checkpoints)
    for step, loss in enumerate(losses, start=1):
        events.append(
            {
                "event": "train",
                "time": float(step),
                "step": step,
                "loss": loss,
                "learning_rate": 1e-4,
                "tokens": 512,
                "trained_tokens": 512 * step,
                "tokens_per_second": tps[step - 1],
                "grad_norm": 1.0,
                "peak_memory_gb": 1.0,
                "elapsed": float(step),
            }
        )
        if step in val:
            window = losses[max(0, step - 10) : step]
            events.append(
                {
                    "event": "eval",
                    "time": float(step),
                    "step": step,
                    "val_loss": val[step],
                    "val_ppl": float(np.exp(val[step])),
                    "train_loss": eval_train.get(step, float(np.mean(window))),
                }
            )
            if step in (qa or {}):
                files = qa[step]  # type: ignore[index]
                correct, total = sum(c for c, _ in files.values()), sum(t for _, t in files.values())
                events[-1].update(
                    qa_accuracy=correct / total,
                    qa_correct=correct,
                    qa_total=total,
                    qa_files={n: {"correct": c, "total": t, "accuracy": c / t} for n, (c, t) in files.items()},
                )
        if step in ckpts:
            events.append(
                {
                    "event": "checkpoint",
                    "time": float(step),
                    "step": step,
                    "path": f"checkpoints/step_{step:06d}",
                    "val_loss": val.get(step),
                }
            )
    if done:
        events.append(
            {
                "event": "done",
                "time": float(len(losses)),
                "step": len(losses),
                "status": "completed",
                "final_loss": losses[-1] if losses else None,
                "best_checkpoint": None,
                "best_val_loss": min(val.values()) if val else None,
            }
        )
    return events


def write_run(
    root: Path,
    name: str,
    events: list[dict[str, Any]],
    *,
    config: dict[str, Any] | None = None,
    checkpoint_dirs: Iterable[int] = (),
    kind: str = "cpt",
    torn_tail: bool = False,
) -> Path:
    """A run folder under ``root/models/<kind>/<name>`` holding ``events``, and weightless checkpoints
    (trainer state and manifest only) for ``checkpoint_dirs``; tests that need weights add them."""
    run = root / "models" / kind / name
    prepare_folder(run, overwrite=False).release()
    (run / "config.yaml").write_text(
        yaml.safe_dump(
            config or {"model_name": "default", "engine": "torch", "training_type": kind, "fine_tune_type": "lora"}
        )
    )
    writer = MetricsWriter(run / "metrics.jsonl")
    for e in events:
        record = make_event(e["event"], e["step"], **{k: v for k, v in e.items() if k not in ("event", "step", "time")})
        writer.append({**record, "time": e.get("time", record["time"])})
    writer.close()
    if torn_tail:  # a trainer killed while writing a line
        with open(run / "metrics.jsonl", "a") as fh:
            fh.write('{"event": "train", "step": 99999, "lo')
    val_at = {e["step"]: e["val_loss"] for e in events if e["event"] == "eval"}
    store = CheckpointStore(run, max_keep=1_000_000)
    for step in checkpoint_dirs:
        store.save(step, {"step": step, "val_loss": val_at.get(step)}, lambda folder: None)
    return run
