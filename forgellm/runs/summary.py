"""One summary of a run: status, progress, best checkpoint and last metrics, as every screen shows it.

Only files are read (``status.json``, ``config.yaml``, the ends of ``metrics.jsonl``,
``checkpoints/best.json``, the run lock), so the CLI, the web app and the dashboards see the
same thing, whichever process trains.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.jsonio import read_json
from forgellm.runs import lock
from forgellm.runs.checkpoints import read_best, step_checkpoints
from forgellm.runs.events import OPENINGS, Event, first_event, last_events
from forgellm.runs.layout import METRICS_FILE, STATUS_FILE, find_run, read_config, run_dirs
from forgellm.workspace import Workspace

GONE = "the training process ended without a final status (killed?)"


@dataclass
class RunSummary:
    name: str
    path: Path
    kind: str  # cpt | ift
    status: str  # running | done | stopped | failed | created
    pid: int | None = None  # of the process holding the run lock (running only)
    host: str | None = None
    step: int = 0
    total_steps: int | None = None  # max_iterations of the latest start or resume
    num_epochs: float | None = None  # the run's length in epochs (given or derived from its steps)
    epoch: float | None = None  # epochs done at the last train event
    progress: float = 0.0  # 0..1
    eta_seconds: float | None = None  # running only
    engine: str | None = None
    training_type: str | None = None
    fine_tune_type: str | None = None
    model: str | None = None
    best_checkpoint: str | None = None  # the trainer's (checkpoints/best.json)
    best_metric: str | None = None  # what it was chosen by (best_metric: val_loss | qa_accuracy)
    best_value: float | None = None
    best_val_loss: float | None = None
    last_train: dict[str, Any] | None = None
    last_eval: dict[str, Any] | None = None
    message: str | None = None  # why a failed run failed
    checkpoints: list[str] = field(default_factory=list)
    updated: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def read_status(run_dir: Path) -> dict[str, Any]:
    """``status.json``; a "running" run whose lock nobody holds (the trainer is gone) is "failed"."""
    status = read_json(Path(run_dir) / STATUS_FILE) or {}
    if status.get("status") == "running" and lock.holder(run_dir) is None:
        status = {**status, "status": "failed", "message": GONE}
    return status


def summarize(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    status = read_status(run_dir)
    metrics = run_dir / METRICS_FILE
    last = last_events(metrics)
    opening = max((last[k] for k in OPENINGS if k in last), key=lambda e: e.get("time", 0), default=None)
    opening = opening or first_event(metrics) or {}
    summary = RunSummary(
        name=run_dir.name,
        path=run_dir,
        kind=config.get("training_type") or run_dir.parent.name,
        status=status.get("status") or ("done" if Event.DONE in last else "created"),
        step=max([int(status.get("step") or 0), *(int(e.get("step") or 0) for e in last.values())]),
        # status.json and config.yaml carry the latest process's max_iterations (a resume may change it)
        total_steps=status.get("total_steps") or config.get("max_iterations") or opening.get("total_steps"),
        num_epochs=config.get("num_epochs") or opening.get("num_epochs"),
        epoch=(last.get(Event.TRAIN) or {}).get("epoch"),
        engine=opening.get("engine"),
        training_type=opening.get("training_type") or config.get("training_type"),
        fine_tune_type=opening.get("fine_tune_type") or config.get("fine_tune_type"),
        model=opening.get("model") or config.get("model_name"),
        last_train=last.get(Event.TRAIN),
        last_eval=last.get(Event.EVAL),
        updated=status.get("updated") or _mtime(run_dir),
        checkpoints=[p.name for p in step_checkpoints(run_dir)],
    )
    holder = lock.holder(run_dir)
    if holder is not None:  # a live trainer, even before its first status (preparing data, loading)
        summary.status, summary.pid, summary.host = "running", holder.pid, holder.host
    if summary.status == "failed":
        error = last.get(Event.ERROR)
        summary.message = status.get("message") or (error or {}).get("message")
    if summary.status == "running":
        summary.eta_seconds = _eta(summary.last_train, summary.total_steps)
    if summary.total_steps:
        summary.progress = round(min(summary.step / summary.total_steps, 1.0), 4)
    best = read_best(run_dir)
    if best is not None:
        summary.best_checkpoint = best["checkpoint"]
        summary.best_metric = best.get("metric") or "val_loss"
        summary.best_value = best.get("value", best.get(summary.best_metric))
        summary.best_val_loss = best.get("val_loss")
    return summary


def _eta(train: dict[str, Any] | None, total: int | None) -> float | None:
    step, elapsed = (train or {}).get("step"), (train or {}).get("elapsed")
    if not total or not step or not elapsed:
        return None
    return round(elapsed / step * max(total - step, 0), 1)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def list_runs(workspace: Workspace | None = None) -> list[RunSummary]:
    """Every run under models/cpt and models/ift, most recently updated first."""
    found = [summarize(p) for p in run_dirs(workspace or Workspace.current())]
    return sorted(found, key=lambda s: s.updated or 0.0, reverse=True)


def show_run(name: str, workspace: Workspace | None = None) -> RunSummary:
    return summarize(find_run(name, workspace))
