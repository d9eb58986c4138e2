"""``/api/training/*`` and ``/api/config/schema``: start, watch and stop training processes."""

from __future__ import annotations

import functools
from typing import Any

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field

from forgellm.access import check_name, request_path
from forgellm.data.settings import FOLDER_KEYS
from forgellm.errors import NotFoundError, UserError
from forgellm.models.resolve import resolve_pair
from forgellm.security.requests import request_roots
from forgellm.training.config import TrainingConfig, config_keys, validate_config  # pydantic only: no engine
from forgellm.web import context, openapi
from forgellm.web.services import runs as run_files
from forgellm.web.services.stats_request import FORM_KEYS, form_settings, model_tokenizer, without_replay
from forgellm.web.validation import body, query

bp = Blueprint("training", __name__)


class StartTraining(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] = Field(
        description="Training config keys (see /api/config/schema); missing keys take their defaults."
    )
    allow_concurrent: bool = Field(False, description="Start even if another run is training.")


class EstimateTraining(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] = Field(
        description="Training config keys, as sent to /api/training/start; missing keys take their defaults."
    )


class SpeedQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field("default", description="model_name as in the training config.")
    engine: str = Field("auto", description="Training engine (auto, torch or mlx).")


class StopTraining(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str | None = Field(None, description="Run id or job id to stop; default every run started from this app.")


def training_config(values: dict[str, Any]) -> TrainingConfig:
    """The config the CLI would accept (its own validation), with every path in it confined.

    A person at the terminal may name any path; a request may only name what `forgellm.access`
    allows: the model, adapter and data inside the workspace (plus listed roots and, for models,
    the Hugging Face cache), the run folder a single name under an allowed output folder.
    Raises a UserError naming the field, before any process starts.
    """
    config = validate_config(values)
    workspace, roots = context.workspace(), request_roots()
    try:
        resolve_pair(config.model_name, None, workspace, model_arg="model_name", roots=roots)
    except NotFoundError as exc:
        raise UserError(str(exc).split("\n")[0] + " (pick one from the Models tab)", field="model_name") from None
    for key in ("input_dir", *FOLDER_KEYS):
        given = getattr(config, key)
        if given is not None and not request_path(given, key, roots, "read").is_dir():
            raise UserError(f"{key}: folder {given!r} does not exist; pick a folder from the Datasets tab", field=key)
    if config.eval_qa is not None and not request_path(config.eval_qa, "eval_qa", roots, "read").exists():
        raise UserError(
            f"eval_qa: {config.eval_qa!r} does not exist; give a JSONL file (or folder) of "
            f"question/answer records inside the workspace",
            field="eval_qa",
        )
    if config.output_dir is not None:
        request_path(config.output_dir, "output_dir", roots, "write")
    if config.run_name is not None:
        check_name(config.run_name, "run_name")
    return config


@bp.post("/api/training/start")
@openapi.doc(
    "Start a training run in its own process",
    body=StartTraining,
    responses={409: "another run is active (send allow_concurrent)"},
)
def start():
    request = body(StartTraining)
    config = training_config(request.config)
    job = context.jobs().start(config.model_dump(mode="json"), allow_concurrent=request.allow_concurrent)
    context.live().start()
    return jsonify({"job": context.jobs().describe(job)}), 202


@bp.post("/api/training/estimate")
@openapi.doc(
    "A run's length both ways, tokens and duration before it starts (the Training form's estimate)",
    body=EstimateTraining,
    responses={429: "the most data stats processes run already (ask again)"},
)
def estimate():
    from forgellm.web.services.estimate import estimate as run_estimate
    from forgellm.web.services.speed import measured_speed

    config = training_config(body(EstimateTraining).config)
    workspace, roots = context.workspace(), request_roots()
    data = request_path(config.input_dir, "input_dir", roots, "read")
    values = {name: getattr(config, name) for name in FORM_KEYS}
    settings, replay = without_replay(config.training_type, form_settings(values, roots), data)
    tokenizer = model_tokenizer(config.model_name, "model_name", workspace, roots)

    def stats_for(copies: int) -> dict[str, Any]:
        return context.dataset_stats().get(
            data, config.training_type, tokenizer, {**settings, "shuffled_copies": copies}
        )

    engine = config.resolved_engine()
    speed = {"engine": engine, **measured_speed(workspace, config.model_name, engine)}
    return jsonify({**run_estimate(config, data, stats_for, speed), **replay})


@bp.get("/api/training/status")
@openapi.doc("Training jobs of this app and the runs training now, with progress and ETA")
def status():
    jobs = context.jobs()
    state = jobs.status()
    workspace = context.workspace()
    state["runs"] = [
        run_files.summarize(workspace, run_files.run_path(workspace, rid))
        for rid in state["active"]
        if not rid.startswith("job-")
    ]
    return jsonify(state)


@bp.post("/api/training/stop")
@openapi.doc(
    "Stop a run started from this app (it saves a checkpoint, then exits)",
    body=StopTraining,
    responses={404: "no such run of this app", 409: "nothing to stop"},
)
def stop():
    request = body(StopTraining)
    stopped = context.jobs().stop(request.run)
    return jsonify({"stopped": [context.jobs().describe(job) for job in stopped]})


@bp.get("/api/training/speed")
@openapi.doc(
    "Measured training speed (tokens/s) of earlier runs of a model on an engine (the form's estimate)", query=SpeedQuery
)
def speed():
    from forgellm.web.services.speed import measured_speed

    args = query(SpeedQuery)
    if args.engine not in ("auto", "torch", "mlx"):
        raise UserError(f"engine {args.engine!r}: use auto, torch or mlx", field="engine")
    engine = TrainingConfig(engine=args.engine).resolved_engine()
    return jsonify({"model": args.model, "engine": engine, **measured_speed(context.workspace(), args.model, engine)})


@bp.get("/api/config/schema")
@openapi.doc("Every training config key with its type, default and help (drives the Training form)")
def config_schema():
    return jsonify({"fields": _config_fields()})


@functools.cache  # the schema is fixed for the process; building it is most of the page's first request
def _config_fields() -> list[dict[str, Any]]:
    from forgellm.data.settings import SHARED_KEYS

    properties = TrainingConfig.model_json_schema()["properties"]
    fields = []
    for name, default, description in config_keys():
        prop = properties[name]
        fields.append(
            {
                "name": name,
                "default": default,
                "description": description,
                "type": _json_type(prop),
                "enum": prop.get("enum"),
                "minimum": prop.get("minimum", prop.get("exclusiveMinimum")),
                "maximum": prop.get("maximum", prop.get("exclusiveMaximum")),
                # {key: [values]}: the form shows the field only while every key has one of its values
                "applies": prop.get("applies"),
                "data": name in SHARED_KEYS,
            }
        )  # a data setting: the form's stats line sends it
    return fields


def _json_type(prop: dict[str, Any]) -> str:
    """The field's main JSON type (``anyOf [X, null]`` -> X)."""
    if "enum" in prop:
        return "enum"
    types = [p.get("type") for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    return types[0] if types else "string"
