"""Run folders as the web app sees them (layout in docs/run-format.md).

A run is addressed by its id: its path under ``models/``, e.g. ``cpt/my-run``. Everything
here reads files; nothing holds run state in memory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from forgellm.access import check_name
from forgellm.errors import NotFoundError
from forgellm.jsonio import read_json as _read_json
from forgellm.web.services.metrics_file import parse_line
from forgellm.workspace import Workspace

RUN_KINDS = ("cpt", "ift")
RUN_MARKER = ".forgellm-run"
TAIL_BYTES = 64 * 1024


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / RUN_MARKER).exists() or (path / "metrics.jsonl").exists())


def run_dirs(workspace: Workspace) -> list[Path]:
    """Every run folder under models/cpt and models/ift, newest first."""
    found = [child for kind in RUN_KINDS if (folder := workspace.models(kind)).is_dir()
             for child in folder.iterdir() if is_run_dir(child)]
    return sorted(found, key=_mtime, reverse=True)


def run_id(workspace: Workspace, path: Path) -> str:
    return path.resolve().relative_to(workspace.models_dir.resolve()).as_posix()


def run_path(workspace: Workspace, rid: str, field: str = "run") -> Path:
    """The folder of run ``rid`` (``cpt/<name>`` or ``ift/<name>``, the request name rule of
    `forgellm.access`), confined to its ``models/<kind>``; NotFoundError if it is not a run."""
    check_name(rid, field, kinds=RUN_KINDS)
    kind = rid.split("/")[0]
    path = workspace.confine(rid.split("/")[1], within=workspace.models(kind))
    if not is_run_dir(path):
        raise NotFoundError(f"run {rid!r} not found; see GET /api/runs for the runs", field=field)
    return path


def read_status(path: Path) -> dict[str, Any]:
    """status.json, with a 'running' run whose process is gone reported as 'failed'."""
    status = _read_json(path / "status.json") or {}
    if status.get("status") == "running" and not pid_alive(status.get("pid")):
        status = {**status, "status": "failed", "reason": "the training process is gone"}
    return status


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours has exited even though its pid still answers.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def summarize(workspace: Workspace, path: Path) -> dict[str, Any]:
    """What the runs list shows: status, progress, ETA, best checkpoint and the latest metrics."""
    status = read_status(path)
    start = _first_event(path / "metrics.jsonl")
    last = _last_events(path / "metrics.jsonl")
    train, evaluation, done = last.get("train", {}), last.get("eval", {}), last.get("done", {})
    total = start.get("total_steps")
    step = max((e.get("step") or 0 for e in last.values()), default=status.get("step") or 0)
    return {
        "id": run_id(workspace, path),
        "name": path.name,
        "kind": path.parent.name,
        "path": str(path),
        "status": status.get("status") or ("done" if done else "unknown"),
        "pid": status.get("pid"),
        "step": step,
        "total_steps": total,
        "progress": round(step / total, 4) if total else None,
        "eta_seconds": eta_seconds(train, total) if status.get("status") == "running" else None,
        "model": start.get("model"),
        "training_type": start.get("training_type"),
        "fine_tune_type": start.get("fine_tune_type"),
        "engine": start.get("engine"),
        "loss": train.get("loss"),
        "val_loss": evaluation.get("val_loss"),
        "best_val_loss": done.get("best_val_loss"),
        "best_checkpoint": done.get("best_checkpoint") or best_checkpoint(path),
        "updated": status.get("updated") or _mtime(path),
    }


def eta_seconds(train: dict[str, Any], total: int | None) -> float | None:
    step, elapsed = train.get("step"), train.get("elapsed")
    if not total or not step or not elapsed:
        return None
    return round(elapsed / step * max(total - step, 0), 1)


def best_checkpoint(path: Path) -> str | None:
    """The name of the best checkpoint: the ``best`` symlink or ``best.json``."""
    link = path / "checkpoints" / "best"
    if link.is_symlink():
        return Path(os.readlink(link)).name
    best = _read_json(path / "checkpoints" / "best.json") or {}
    return best.get("checkpoint")


def checkpoints(workspace: Workspace, path: Path) -> list[dict[str, Any]]:
    """The run's complete checkpoints (step folders with trainer_state.json), oldest first."""
    folder = path / "checkpoints"
    if not folder.is_dir():
        return []
    best = best_checkpoint(path)
    out = []
    for child in sorted(folder.glob("step_*")):
        state = _read_json(child / "trainer_state.json")
        if not child.is_dir() or state is None:
            continue  # a checkpoint being written, or not ours
        out.append({"run": run_id(workspace, path), "name": child.name, "step": state.get("step"),
                    "val_loss": state.get("val_loss"), "best": child.name == best,
                    "path": str(child), "id": f"{run_id(workspace, path)}/checkpoints/{child.name}"})
    return out


def _first_event(metrics: Path) -> dict[str, Any]:
    try:
        with open(metrics, "rb") as fh:
            event = parse_line(fh.readline())
    except OSError:
        return {}
    return event if event and event.get("event") == "start" else {}


def _last_events(metrics: Path) -> dict[str, dict[str, Any]]:
    """The last event of each kind in the file's final TAIL_BYTES (enough for a summary)."""
    try:
        with open(metrics, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - TAIL_BYTES, 0))
            lines = fh.read().splitlines()
    except OSError:
        return {}
    last: dict[str, dict[str, Any]] = {}
    for line in lines:
        if (event := parse_line(line)) is not None:
            last[event["event"]] = event
    return last


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()
