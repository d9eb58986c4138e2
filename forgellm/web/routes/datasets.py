"""``/api/datasets``: browse the workspace's ``dataset/`` folder, preview files, see their stats,
synthesize question/answer chats and paraphrases from its documents.

Every path comes from the request, so each is confined to ``dataset/`` by the request rule of
`forgellm.access`: absolute paths are refused (400), ``..`` components and symlinks that leave
the folder too (403). The tokenizer ``model`` of the stats follows the rule for models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from forgellm.access import request_path
from forgellm.data.settings import FOLDER_KEYS, DataSettings
from forgellm.errors import NotFoundError, UserError
from forgellm.jsonio import read_json
from forgellm.security.auth import TOKEN_ENV
from forgellm.security.requests import ModelRef, request_roots
from forgellm.web import context, openapi
from forgellm.web.services.stats_request import FORM_KEYS, form_settings, model_tokenizer, without_replay
from forgellm.web.validation import body, query

bp = Blueprint("datasets", __name__)

MAX_ENTRIES = 5000
BINARY_SUFFIXES = {".pdf", ".parquet", ".arrow", ".gz", ".zip", ".bin", ".npy"}


class PreviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, description="File path relative to dataset/.")
    max_bytes: int = Field(65536, ge=1, le=1048576, description="How much of the file to return.")


def _form_key(name: str) -> tuple[Any, Any]:
    """A query parameter declared as the data setting ``name`` (its bounds and description), optional."""
    field = DataSettings.model_fields[name]
    annotation: Any = str if name in FOLDER_KEYS else field.annotation
    return annotation | None, FieldInfo.merge_field_infos(
        field, default=None, description=(f"{field.description} Default: the training default ({field.default!r}).")
    )


class _StatsQueryBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(".", description="File or folder relative to dataset/ ('.' = all of it).")
    mode: Literal["cpt", "ift", "preference"] | None = Field(
        None, description="Read it as CPT documents, IFT records or preference pairs (default: cpt)."
    )
    model: ModelRef | None = Field(
        None,
        description="Tokenizer of this model for the token counts, and the model that "
        "writes the replay set when data_mixture_ratio < 1 (default: the embedded model).",
    )


_form_fields: dict[str, Any] = {name: _form_key(name) for name in FORM_KEYS}
StatsQuery = create_model("StatsQuery", __base__=_StatsQueryBase, **_form_fields)


class SynthesizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, description="Folder or file of documents, relative to dataset/.")
    out: str | None = Field(
        None,
        min_length=1,
        description="Output folder relative to dataset/ (default: <path>-synth); "
        "an earlier, unfinished synthesis there is resumed.",
    )
    teacher: str = Field("default", min_length=1, description="Model name, or the URL of an OpenAI-compatible server.")
    teacher_model: str | None = Field(None, min_length=1, description="Model id to ask at a teacher URL.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$",
        description="Environment variable of the web app holding the teacher URL's API key.",
    )
    questions_per_chunk: int = Field(3, ge=0, le=20, description="Question/answer pairs asked for each chunk.")
    paraphrases: int = Field(2, ge=0, le=10, description="Paraphrases written of each chunk.")


class SynthesisQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out: str = Field(min_length=1, description="The synthesis output folder, relative to dataset/.")


def dataset_path(raw: str) -> Path:
    """``raw`` resolved inside dataset/, or a 400/403/404 naming the problem."""
    folder = context.workspace().dataset_dir
    path = (
        request_path(raw, "path", request_roots(), "read", base=folder, within=folder, relative_only=True)
        if raw != "."
        else folder.resolve()
    )
    if not path.exists():
        raise NotFoundError(f"path: {raw!r} does not exist in the dataset folder", field="path")
    return path


@bp.get("/api/datasets")
@openapi.doc("Files and folders under dataset/ (symlinks that leave it are not listed)")
def list_datasets():
    root = context.workspace().dataset_dir.resolve()
    entries = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _inside(root, here / d))
        for name in dirs:
            entries.append({"path": (here / name).relative_to(root).as_posix(), "type": "folder"})
        for name in sorted(files):
            file = here / name
            if name.startswith(".") or not _inside(root, file):
                continue
            entries.append(
                {
                    "path": file.relative_to(root).as_posix(),
                    "type": "file",
                    "size": file.stat().st_size,
                    "suffix": file.suffix.lower(),
                }
            )
        if len(entries) >= MAX_ENTRIES:
            break
    entries.sort(key=lambda e: e["path"])
    return jsonify({"root": str(root), "entries": entries[:MAX_ENTRIES], "truncated": len(entries) > MAX_ENTRIES})


@bp.get("/api/datasets/preview")
@openapi.doc(
    "The beginning of one file under dataset/",
    query=PreviewQuery,
    responses={403: "path outside dataset/", 404: "no such file"},
)
def preview():
    args = query(PreviewQuery)
    path = dataset_path(args.path)
    if path.is_dir():
        raise UserError(f"path: {args.path!r} is a folder; preview one of its files", field="path")
    size = path.stat().st_size
    info = {"path": args.path, "size": size, "suffix": path.suffix.lower()}
    with open(path, "rb") as fh:
        head = fh.read(args.max_bytes)
    if path.suffix.lower() in BINARY_SUFFIXES or b"\0" in head[:8192]:
        return jsonify({**info, "binary": True, "text": None, "truncated": size > len(head)})
    return jsonify({**info, "binary": False, "text": head.decode("utf-8", "replace"), "truncated": size > len(head)})


@bp.get("/api/datasets/stats")
@openapi.doc(
    "Data stats of a file or folder under dataset/ (`forgellm data stats --json`)",
    query=StatsQuery,
    responses={
        403: "path outside dataset/, or a tokenizer outside what requests may reach",
        404: "no such path or model",
        429: "the most stats processes run already",
    },
)
def stats():
    args = query(StatsQuery)
    path = dataset_path(args.path)
    workspace, roots = context.workspace(), request_roots()
    tokenizer = model_tokenizer(args.model, "model", workspace, roots) if args.model is not None else None
    values = {name: getattr(args, name) for name in FORM_KEYS}
    settings, replay = without_replay(args.mode, form_settings(values, roots), path)
    return jsonify(
        {"path": args.path, "stats": context.dataset_stats().get(path, args.mode, tokenizer, settings), **replay}
    )


@bp.post("/api/datasets/synthesize")
@openapi.doc(
    "Synthesize grounded Q&A chats and paraphrases from documents (`forgellm data synthesize`, in its own process)",
    body=SynthesizeRequest,
    responses={403: "path outside dataset/", 404: "no such path"},
)
def synthesize():
    from forgellm.data.synthesis import SynthesisOptions  # the data pipeline stays out of the app until used
    from forgellm.data.synthesis.teachers import chat_base_url, is_url

    request = body(SynthesizeRequest)
    source = dataset_path(request.path)
    workspace = context.workspace()
    out = _output_folder(request.out or f"{request.path.rstrip('/')}-synth")
    try:  # the command's own checks, before a process starts (the ranges are the schema's)
        SynthesisOptions(
            source=source, out=out, questions_per_chunk=request.questions_per_chunk, paraphrases=request.paraphrases
        ).check()
    except UserError as exc:
        raise UserError(str(exc).replace("--out", "out").replace("SOURCE", "path"), field="out") from None
    argv = [
        "data",
        "synthesize",
        str(source),
        "--out",
        str(out),
        "--teacher",
        request.teacher,
        "--questions-per-chunk",
        str(request.questions_per_chunk),
        "--paraphrases",
        str(request.paraphrases),
    ]
    argv += ["--teacher-model", request.teacher_model] if request.teacher_model else []
    key_env = request.api_key_env
    if key_env and key_env.upper().startswith("FORGELLM_"):
        # The app's own secrets go to no URL a request names; the model server gets its token below.
        raise UserError(
            f"api_key_env {key_env!r} is one of ForgeLLM's own variables; name the teacher's key variable",
            field="api_key_env",
        )
    if (
        not key_env
        and current_app.config.get("ACCESS_TOKEN")
        and is_url(request.teacher)
        and chat_base_url(request.teacher) == chat_base_url(context.server_url())
    ):
        key_env = TOKEN_ENV  # the app's model server wants the token the app already passes it
    argv += ["--api-key-env", key_env] if key_env else []
    task = context.tasks().start("synthesize", argv)
    return jsonify({"task": task.describe(), "out": out.relative_to(workspace.dataset_dir.resolve()).as_posix()}), 202


@bp.get("/api/datasets/synthesis")
@openapi.doc(
    "Progress, counts and sample records of a synthesis (its summary.json) and of the task writing it",
    query=SynthesisQuery,
    responses={403: "path outside dataset/", 404: "no synthesis there"},
)
def synthesis():
    args = query(SynthesisQuery)
    out = _output_folder(args.out)  # may not exist yet: the task is still loading its teacher
    task = next(
        (
            t
            for t in sorted(context.tasks().tasks.values(), key=lambda t: t.started, reverse=True)
            if t.kind == "synthesize" and t.argv[t.argv.index("--out") + 1] == str(out)
        ),
        None,
    )
    summary = read_json(out / "summary.json")
    if summary is None and task is None:
        raise NotFoundError(f"{args.out!r} holds no synthesis; start one with POST /api/datasets/synthesize")
    return jsonify({"out": args.out, "summary": summary, "task": task.describe() if task else None})


def _output_folder(raw: str) -> Path:
    """A synthesis output folder inside dataset/ (existing or not), or a 400/403 naming ``out``."""
    folder = context.workspace().dataset_dir
    return request_path(raw, "out", request_roots(), "write", base=folder, within=folder, relative_only=True)


def _inside(root: Path, path: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or root in resolved.parents
