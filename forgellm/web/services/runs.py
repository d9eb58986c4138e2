"""Run folders as the web app addresses them: by id, their path under ``models/`` (``cpt/my-run``).

Reading a run (status, summary, checkpoints) is `forgellm.runs`; this module only maps ids to
folders and summaries to the JSON the pages use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgellm.access import check_name
from forgellm.errors import NotFoundError
from forgellm.jsonio import read_json
from forgellm.runs.checkpoints import STATE_FILE, problem, read_best, step_checkpoints
from forgellm.runs.layout import RUN_KINDS, is_run
from forgellm.runs.layout import run_dirs as _run_dirs
from forgellm.runs.summary import summarize as _summarize
from forgellm.workspace import Workspace


def run_dirs(workspace: Workspace) -> list[Path]:
    """Every run folder under models/cpt and models/ift, newest first."""
    return sorted(_run_dirs(workspace), key=_mtime, reverse=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # deleted meanwhile
        return 0.0


def run_id(workspace: Workspace, path: Path) -> str:
    return path.resolve().relative_to(workspace.models_dir.resolve()).as_posix()


def run_path(workspace: Workspace, rid: str, field: str = "run") -> Path:
    """The folder of run ``rid`` (``cpt/<name>`` or ``ift/<name>``, the request name rule of
    `forgellm.access`), confined to its ``models/<kind>``; NotFoundError if it is not a run."""
    check_name(rid, field, kinds=RUN_KINDS)
    kind = rid.split("/")[0]
    path = workspace.confine(rid.split("/")[1], within=workspace.models(kind))
    if not is_run(path):
        raise NotFoundError(f"run {rid!r} not found; see GET /api/runs for the runs", field=field)
    return path


def summarize(workspace: Workspace, path: Path) -> dict[str, Any]:
    """What the runs table, the Models tab and the progress bar show (`forgellm.runs.summary`)."""
    s = _summarize(path)
    return {
        "id": run_id(workspace, path),
        "name": s.name,
        "kind": path.parent.name,
        "path": str(path),
        "status": s.status,
        "pid": s.pid,
        "host": s.host,
        "message": s.message,
        "step": s.step,
        "total_steps": s.total_steps,
        "progress": s.progress if s.total_steps else None,
        "eta_seconds": s.eta_seconds,
        "model": s.model,
        "training_type": s.training_type,
        "fine_tune_type": s.fine_tune_type,
        "engine": s.engine,
        "loss": (s.last_train or {}).get("loss"),
        "val_loss": (s.last_eval or {}).get("val_loss"),
        "best_checkpoint": s.best_checkpoint,
        "best_metric": s.best_metric,
        "best_value": s.best_value,
        "best_val_loss": s.best_val_loss,
        "updated": s.updated,
    }


def checkpoints(workspace: Workspace, path: Path) -> list[dict[str, Any]]:
    """The run's complete checkpoints, oldest first, each marked best (the trainer's) and intact."""
    best = (read_best(path) or {}).get("checkpoint")
    rid = run_id(workspace, path)
    out = []
    for folder in step_checkpoints(path):
        state = read_json(folder / STATE_FILE) or {}
        trouble = problem(folder, hashes=False)  # sizes only: a listing must stay fast
        out.append(
            {
                "run": rid,
                "name": folder.name,
                "step": state.get("step"),
                "val_loss": state.get("val_loss"),
                "best": folder.name == best,
                "intact": trouble is None,
                "problem": trouble,
                "path": str(folder),
                "id": f"{rid}/checkpoints/{folder.name}",
            }
        )
    return out
