"""``/api/datasets``: browse the workspace's ``dataset/`` folder, preview files, see their stats.

Every path comes from the request, so each is confined to ``dataset/``: absolute paths are
refused (400), and ``..`` or symlinks that leave the folder too (403).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from flask import Blueprint, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

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


class StatsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(".", description="File or folder relative to dataset/ ('.' = all of it).")
    mode: Literal["cpt", "ift", "preference"] | None = Field(None, description="Read it as CPT documents, IFT records or preference pairs (default: detected).")
    model: str | None = Field(None, description="Tokenizer of this model for the token counts (default: the embedded model).")


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
    service = current_app.extensions["forgellm"].setdefault("dataset_stats", DatasetStats(context.workspace()))
    return jsonify({"path": args.path, "stats": service.get(path, args.mode, args.model)})


def _inside(root: Path, path: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or root in resolved.parents
