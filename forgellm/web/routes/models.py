"""``/api/models``: base, CPT, IFT and published models; delete, fuse and publish them."""

from __future__ import annotations

from flask import Blueprint, jsonify
from pydantic import BaseModel, ConfigDict, Field

from forgellm.errors import UserError
from forgellm.models.resolve import list_models
from forgellm.runs.lock import refuse_if_held
from forgellm.security import safe_delete
from forgellm.security.requests import DeletableName, RunId
from forgellm.web import context, openapi
from forgellm.web.services import runs as run_files
from forgellm.web.validation import body

bp = Blueprint("models", __name__)


class DeleteModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: DeletableName = Field(description="cpt/<run>, ift/<run> or published/<model>, as listed.")
    confirm: str = Field(description="The same name again: deletion cannot be undone.")


class CheckpointChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: RunId = Field(description="Run id, e.g. cpt/my-run.")
    checkpoint: str = Field("best", pattern=r"^(best|latest|\d+)$", description="best, latest or a step number.")


class PublishModel(CheckpointChoice):
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Name under models/published/."
    )
    gguf: bool = Field(False, description="Also write a GGUF file.")


class ImportModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(
        min_length=1, description="An importable name as listed: lmstudio:<path> or ollama:<model:tag>."
    )
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Name under models/base/.")


@bp.get("/api/models")
@openapi.doc(
    "Every model and adapter in the workspace and the local Hugging Face cache, and the GGUF models "
    "LM Studio and Ollama hold (`importable`)"
)
def list_all():
    from forgellm.models.local_apps import find_local_gguf

    workspace = context.workspace()
    out = []
    for info in list_models(workspace):
        item = info.to_dict()
        if info.extra.get("run"):
            item["run"] = run_files.summarize(workspace, info.path)
        out.append(item)
    return jsonify({"models": out, "importable": [g.to_dict() for g in find_local_gguf()]})


@bp.post("/api/models/import")
@openapi.doc(
    "Import an LM Studio or Ollama model into models/base (`forgellm models import`, in its own process)",
    body=ImportModel,
    responses={404: "not among the importable models"},
)
def import_model():
    from forgellm.errors import NotFoundError
    from forgellm.models.local_apps import find_local_gguf

    request = body(ImportModel)
    if request.source not in {g.name for g in find_local_gguf()}:  # only what LM Studio / Ollama hold, no paths
        raise NotFoundError(f"{request.source!r} is not an importable LM Studio or Ollama model; see GET /api/models")
    argv = ["models", "import", request.source] + (["--name", request.name] if request.name else [])
    task = context.tasks().start("import", argv)
    return jsonify({"task": task.describe()}), 202


@bp.delete("/api/models")
@openapi.doc(
    "Delete a trained or published model folder that ForgeLLM created",
    body=DeleteModel,
    responses={403: "not created by ForgeLLM, or a base model", 404: "no such model", 409: "still training"},
)
def delete():
    request = body(DeleteModel)  # the name is cpt/<run>, ift/<run> or published/<model>, nothing else
    if request.confirm != request.name:
        raise UserError("confirm must repeat the model name exactly", field="confirm")
    workspace = context.workspace()
    refuse_if_held(workspace.models_dir / request.name, "delete")  # a live trainer holds the run lock
    safe_delete(request.name, workspace)  # refuses links, unmarked folders and anything outside models/<kind>
    return jsonify({"deleted": request.name})


@bp.post("/api/models/fuse")
@openapi.doc(
    "Fuse a run's checkpoint into a full model (`forgellm fuse`, in its own process)",
    body=CheckpointChoice,
    responses={404: "no such run"},
)
def fuse():
    request = body(CheckpointChoice)
    run_files.run_path(context.workspace(), request.run)
    task = context.tasks().start("fuse", ["fuse", request.run, "--checkpoint", request.checkpoint])
    return jsonify({"task": task.describe()}), 202


@bp.post("/api/models/publish")
@openapi.doc(
    "Publish a run's checkpoint to models/published (`forgellm publish`, in its own process)",
    body=PublishModel,
    responses={404: "no such run"},
)
def publish():
    request = body(PublishModel)
    run_files.run_path(context.workspace(), request.run)
    argv = ["publish", request.run, "--checkpoint", request.checkpoint]
    argv += ["--name", request.name] if request.name else []
    argv += ["--gguf"] if request.gguf else []
    task = context.tasks().start("publish", argv)
    return jsonify({"task": task.describe()}), 202


@bp.get("/api/tasks")
@openapi.doc("Fuse and publish tasks started from this app, with the end of their output")
def tasks():
    return jsonify({"tasks": context.tasks().list()})
