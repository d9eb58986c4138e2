"""``/api/training/*`` and ``/api/config/schema``: start, watch and stop training processes."""

from __future__ import annotations

import difflib
import functools
from typing import Any

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field

from forgellm.errors import ForgeError
from forgellm.models.resolve import resolve
from forgellm.web import context, openapi
from forgellm.web.services import runs as run_files
from forgellm.web.validation import FieldError, body, validate

bp = Blueprint("training", __name__)


class StartTraining(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] = Field(description="Training config keys (see /api/config/schema); missing keys take their defaults.")
    allow_concurrent: bool = Field(False, description="Start even if another run is training.")


class StopTraining(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str | None = Field(None, description="Run id or job id to stop; default every run started from this app.")


def training_config(values: dict[str, Any]):
    """The validated TrainingConfig, or a FieldError naming the first bad key."""
    from forgellm.training.config import TrainingConfig  # pydantic only: no engine is imported

    for key in values:
        if key not in TrainingConfig.model_fields:
            close = difflib.get_close_matches(str(key), list(TrainingConfig.model_fields), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FieldError(f"unknown config key {key!r}{hint}", str(key))
    config = validate(TrainingConfig, values)
    workspace = context.workspace()
    try:
        resolve(config.model_name, workspace)
    except ForgeError as exc:
        raise FieldError(str(exc).split("\n")[0] + " (pick one from the Models tab)", "model_name") from None
    try:
        data_path = workspace.confine(config.input_dir)
    except ForgeError as exc:
        raise FieldError(str(exc), "input_dir") from None
    if not data_path.exists():
        raise FieldError(f"input_dir {config.input_dir!r} does not exist in the workspace ({workspace.root})",
                         "input_dir")
    return config


@bp.post("/api/training/start")
@openapi.doc("Start a training run in its own process", body=StartTraining,
             responses={409: "another run is active (send allow_concurrent)"})
def start():
    request = body(StartTraining)
    config = training_config(request.config)
    job = context.jobs().start(config.model_dump(mode="json"), allow_concurrent=request.allow_concurrent)
    context.live().start()
    return jsonify({"job": context.jobs().describe(job)}), 202


@bp.get("/api/training/status")
@openapi.doc("Training jobs of this app and the runs training now, with progress and ETA")
def status():
    jobs = context.jobs()
    state = jobs.status()
    workspace = context.workspace()
    state["runs"] = [run_files.summarize(workspace, run_files.run_path(workspace, rid))
                     for rid in state["active"] if not rid.startswith("job-")]
    return jsonify(state)


@bp.post("/api/training/stop")
@openapi.doc("Stop a run started from this app (it saves a checkpoint, then exits)", body=StopTraining,
             responses={404: "no such run of this app", 409: "nothing to stop"})
def stop():
    request = body(StopTraining)
    stopped = context.jobs().stop(request.run)
    return jsonify({"stopped": [context.jobs().describe(job) for job in stopped]})


@bp.get("/api/config/schema")
@openapi.doc("Every training config key with its type, default and help (drives the Training form)")
def config_schema():
    return jsonify({"fields": _config_fields()})


@functools.cache  # the schema is fixed for the process; building it is most of the page's first request
def _config_fields() -> list[dict[str, Any]]:
    from forgellm.training.config import TrainingConfig, config_keys

    properties = TrainingConfig.model_json_schema()["properties"]
    fields = []
    for name, default, description in config_keys():
        prop = properties[name]
        fields.append({"name": name, "default": default, "description": description, "type": _json_type(prop),
                       "enum": prop.get("enum"), "minimum": prop.get("minimum", prop.get("exclusiveMinimum")),
                       "maximum": prop.get("maximum", prop.get("exclusiveMaximum")),
                       # {key: [values]}: the form shows the field only while every key has one of its values
                       "applies": prop.get("applies")})
    return fields


def _json_type(prop: dict[str, Any]) -> str:
    """The field's main JSON type (``anyOf [X, null]`` -> X)."""
    if "enum" in prop:
        return "enum"
    types = [p.get("type") for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    return types[0] if types else "string"
