"""Reading run folders: status, progress, best checkpoint and last metrics of every run.

Only files are read (``status.json``, ``metrics.jsonl``, ``checkpoints/best.json``), so the
CLI, the web app and the dashboards see the same thing, whichever process trains.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from forgellm.models.resolve import RUN_MARKER
from forgellm.training.checkpoints import CheckpointStore
from forgellm.training.metrics import iter_metrics
from forgellm.training.run import find_run
from forgellm.workspace import Workspace

RUN_KINDS = ("cpt", "ift")


@dataclass
class RunSummary:
    name: str
    path: Path
    kind: str  # cpt | ift
    status: str  # running | done | stopped | failed | created
    step: int = 0
    total_steps: int | None = None
    num_epochs: float | None = None  # the run's length in epochs (given or derived from its steps)
    epoch: float | None = None  # epochs done at the last train event
    progress: float = 0.0  # 0..1
    engine: str | None = None
    fine_tune_type: str | None = None
    model: str | None = None
    best_checkpoint: str | None = None
    best_val_loss: float | None = None
    last_train: dict[str, Any] | None = None
    last_eval: dict[str, Any] | None = None
    message: str | None = None  # the error of a failed run
    checkpoints: list[str] = field(default_factory=list)
    updated: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def is_run(path: Path) -> bool:
    return (path / RUN_MARKER).exists() and (path / "config.yaml").exists()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def summarize(run_dir: Path) -> RunSummary:
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    summary = RunSummary(name=run_dir.name, path=run_dir, kind=config.get("training_type", run_dir.parent.name),
                         status=status.get("status", "created"), total_steps=config.get("max_iterations"),
                         num_epochs=config.get("num_epochs"), fine_tune_type=config.get("fine_tune_type"), model=config.get("model_name"),
                         updated=status.get("updated"), message=status.get("message"))
    if summary.status == "running" and not pid_alive(status.get("pid")):
        summary.status, summary.message = "failed", "the training process ended without a final status (killed?)"
    for event in iter_metrics(run_dir / "metrics.jsonl"):
        summary.step = max(summary.step, int(event.get("step", 0)))
        kind = event["event"]
        if kind in ("start", "resume"):
            summary.engine = event.get("engine")
            summary.total_steps = event.get("total_steps", summary.total_steps)
            summary.num_epochs = event.get("num_epochs", summary.num_epochs)
        elif kind == "train":
            summary.last_train = event
            summary.epoch = event.get("epoch", summary.epoch)
        elif kind == "eval":
            summary.last_eval = event
        elif kind == "error" and summary.status == "failed":
            summary.message = event.get("message")
    if summary.total_steps:
        summary.progress = min(summary.step / summary.total_steps, 1.0)
    store = CheckpointStore(run_dir, max_keep=1)
    summary.checkpoints = [p.name for p in store.steps()]
    best = store.best()
    if best:
        summary.best_checkpoint, summary.best_val_loss = best["checkpoint"], best.get("val_loss")
    return summary


def list_runs(workspace: Workspace | None = None) -> list[RunSummary]:
    """Every run under models/cpt and models/ift, newest first."""
    workspace = workspace or Workspace.current()
    found = []
    for kind in RUN_KINDS:
        folder = workspace.models(kind)
        if folder.is_dir():
            found.extend(summarize(p) for p in folder.iterdir() if p.is_dir() and is_run(p))
    return sorted(found, key=lambda s: s.updated or 0.0, reverse=True)


def show_run(name: str, workspace: Workspace | None = None) -> RunSummary:
    return summarize(find_run(name, workspace or Workspace.current()))
