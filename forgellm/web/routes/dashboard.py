"""``/api/dashboard/data``: chart data and analysis of one run or several (Compare tab)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from forgellm.errors import UserError
from forgellm.security.requests import RunId
from forgellm.web import context, openapi
from forgellm.web.services import runs as run_files
from forgellm.web.validation import validate

bp = Blueprint("dashboard", __name__)


class DashboardQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: list[RunId] = Field(description="Run id; repeat the parameter to compare runs.", min_length=1, max_length=12)
    max_points: int = Field(
        600, ge=10, le=20000, description="Points per curve after downsampling (best and last kept)."
    )


@bp.get("/api/dashboard/data")
@openapi.doc(
    "Downsampled curves, best checkpoint and recommendations of one or several runs",
    query=DashboardQuery,
    responses={404: "no such run"},
)
def dashboard_data():
    args = validate(
        DashboardQuery,
        {
            "run": request.args.getlist("run"),
            **({"max_points": request.args["max_points"]} if "max_points" in request.args else {}),
        },
    )
    from forgellm.analysis.series import dashboard_data as build  # numpy only

    workspace = context.workspace()
    paths = [run_files.run_path(workspace, rid) for rid in args.run]
    if not all((p / "metrics.jsonl").exists() for p in paths):
        raise UserError("a run has no metrics.jsonl yet; wait for its first step")
    data = build(paths, args.max_points)
    for rid, run in zip(args.run, data["runs"]):
        run["id"] = rid
    return jsonify(data)
