"""``/api/runs`` and ``/api/checkpoints``: the run folders under models/cpt and models/ift."""

from __future__ import annotations

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field

from forgellm.security.requests import RunId
from forgellm.web import context, openapi
from forgellm.web.services import runs as run_files
from forgellm.web.validation import query

bp = Blueprint("runs", __name__)


class CheckpointQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: RunId | None = Field(None, description="Run id (e.g. cpt/my-run); default every run.")


@bp.get("/api/runs")
@openapi.doc("Every run, newest first, with status, progress, ETA and latest metrics")
def list_runs():
    workspace = context.workspace()
    return jsonify({"runs": [run_files.summarize(workspace, path) for path in run_files.run_dirs(workspace)]})


@bp.get("/api/runs/<path:rid>")
@openapi.doc(
    "One run: its summary, resolved config and checkpoints", responses={404: "no such run", 403: "path outside models/"}
)
def show_run(rid: str):
    workspace = context.workspace()
    path = run_files.run_path(workspace, rid)
    config_file = path / "config.yaml"
    return jsonify(
        {
            **run_files.summarize(workspace, path),
            "config": config_file.read_text() if config_file.exists() else None,
            "checkpoints": run_files.checkpoints(workspace, path),
        }
    )


@bp.get("/api/checkpoints")
@openapi.doc("Checkpoints of one run or of every run", query=CheckpointQuery, responses={404: "no such run"})
def list_checkpoints():
    args = query(CheckpointQuery)
    workspace = context.workspace()
    paths = [run_files.run_path(workspace, args.run)] if args.run else run_files.run_dirs(workspace)
    return jsonify({"checkpoints": [c for path in paths for c in run_files.checkpoints(workspace, path)]})
