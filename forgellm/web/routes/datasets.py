"""``/api/datasets``: browse the workspace's ``dataset/`` folder, preview files, see their stats.

Every path comes from the request, so each is confined to ``dataset/``: absolute paths are
refused (400), and ``..`` or symlinks that leave the folder too (403).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from forgellm.data.settings import SHARED_KEYS, DataSettings
from forgellm.errors import AccessError, NotFoundError
from forgellm.web import context, openapi
from forgellm.web.services.dataset_stats import DatasetStats
from forgellm.web.validation import FieldError, query

bp = Blueprint("datasets", __name__)

MAX_ENTRIES = 5000
BINARY_SUFFIXES = {".pdf", ".parquet", ".arrow", ".gz", ".zip", ".bin", ".npy"}


class PreviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, description="File path relative to dataset/.")
    max_bytes: int = Field(65536, ge=1, le=1048576, description="How much of the file to return.")


#: The training config keys the Training form sends so its stats line shows what the run will train on.
FORM_KEYS = tuple(k for k in SHARED_KEYS if k not in ("input_dir", "training_type"))
#: Of those, the folders (paths from the request: confined like every other path).
FOLDER_KEYS = ("general_data_dir", "validation_dir")


def _form_key(name: str) -> tuple[Any, Any]:
    """A query parameter declared as the data setting ``name`` (its bounds and description), optional."""
    field = DataSettings.model_fields[name]
    annotation = str if name in FOLDER_KEYS else field.annotation
    return annotation | None, FieldInfo.merge_field_infos(field, default=None, description=(
        f"{field.description} Default: the training default ({field.default!r})."))


class _StatsQueryBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(".", description="File or folder relative to dataset/ ('.' = all of it).")
    mode: Literal["cpt", "ift"] | None = Field(None, description="Read it as CPT documents or IFT records (default: cpt).")
    model: str | None = Field(None, description="Tokenizer of this model for the token counts, and the model that "
                                                "writes the replay set when data_mixture_ratio < 1 (default: the embedded model).")


StatsQuery = create_model("StatsQuery", __base__=_StatsQueryBase, **{name: _form_key(name) for name in FORM_KEYS})


def dataset_path(raw: str) -> Path:
    """``raw`` resolved inside dataset/, or a 400/403/404 naming the problem."""
    if Path(raw).is_absolute():
        raise FieldError(f"path {raw!r} is absolute; give a path relative to the dataset folder", "path")
    workspace = context.workspace()
    try:
        path = workspace.confine(raw, within=workspace.dataset_dir)
    except AccessError as exc:
        exc.field = "path"
        raise
    if not path.exists():
        raise NotFoundError(f"{raw!r} does not exist in {workspace.dataset_dir}")
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
            entries.append({"path": file.relative_to(root).as_posix(), "type": "file",
                            "size": file.stat().st_size, "suffix": file.suffix.lower()})
        if len(entries) >= MAX_ENTRIES:
            break
    entries.sort(key=lambda e: e["path"])
    return jsonify({"root": str(root), "entries": entries[:MAX_ENTRIES], "truncated": len(entries) > MAX_ENTRIES})


@bp.get("/api/datasets/preview")
@openapi.doc("The beginning of one file under dataset/", query=PreviewQuery,
             responses={403: "path outside dataset/", 404: "no such file"})
def preview():
    args = query(PreviewQuery)
    path = dataset_path(args.path)
    if path.is_dir():
        raise FieldError(f"{args.path!r} is a folder; preview one of its files", "path")
    size = path.stat().st_size
    info = {"path": args.path, "size": size, "suffix": path.suffix.lower()}
    with open(path, "rb") as fh:
        head = fh.read(args.max_bytes)
    if path.suffix.lower() in BINARY_SUFFIXES or b"\0" in head[:8192]:
        return jsonify({**info, "binary": True, "text": None, "truncated": size > len(head)})
    return jsonify({**info, "binary": False, "text": head.decode("utf-8", "replace"), "truncated": size > len(head)})


@bp.get("/api/datasets/stats")
@openapi.doc("Data stats of a file or folder under dataset/ (`forgellm data stats --json`)", query=StatsQuery,
             responses={403: "path outside dataset/", 404: "no such path"})
def stats():
    args = query(StatsQuery)
    path = dataset_path(args.path)
    settings = {name: getattr(args, name) for name in FORM_KEYS if getattr(args, name) is not None}
    for name in FOLDER_KEYS:
        if name in settings:
            settings[name] = workspace_path(settings[name], name)
    service = current_app.extensions["forgellm"].setdefault("dataset_stats", DatasetStats(context.workspace()))
    return jsonify({"path": args.path, "stats": service.get(path, args.mode, args.model, settings)})


def workspace_path(raw: str, field: str) -> Path:
    """A folder a request names (relative to the workspace, as in a training config), confined to it."""
    workspace = context.workspace()
    try:
        path = workspace.confine(raw)
    except AccessError as exc:
        exc.field = field
        raise
    if not path.exists():
        raise FieldError(f"{field} {raw!r} does not exist in the workspace {workspace.root}", field)
    return path


def _inside(root: Path, path: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or root in resolved.parents
