"""``forgellm models import``: bring a GGUF file, an LM Studio / Ollama model or a Hugging Face
model folder into ``models/base/<name>``, whole or not at all."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from forgellm.errors import ConflictError, UserError
from forgellm.models.gguf_import import convert_gguf, inspect_gguf
from forgellm.models.resolve import MODEL_MARKER
from forgellm.publishing.staging import staged_folder
from forgellm.workspace import Workspace

LOCAL_APPS = ("lmstudio:", "ollama:")


def import_model(
    source: str,
    *,
    name: str | None = None,
    link: bool = False,
    force: bool = False,
    workspace: Workspace | None = None,
    progress: bool = True,
) -> Path:
    """Import ``source`` and return the new model folder."""
    workspace = (workspace or Workspace.current()).ensure()
    if source.startswith(LOCAL_APPS):
        from forgellm.models.local_apps import resolve_local

        local = resolve_local(source)
        path, label = local.path, local.name
        default_name = local.name.split(":", 1)[1]
    else:
        path = Path(source).expanduser().resolve()
        if not path.exists():
            raise UserError(
                f"{source} does not exist: pass a .gguf file, a model folder, lmstudio:<path> or "
                f"ollama:<model>; `forgellm models list` shows what LM Studio and Ollama hold"
            )
        label, default_name = str(path), path.stem if path.is_file() else path.name
    target = workspace.models("base") / _safe_name(name or default_name)
    if target.exists() and not force:
        raise ConflictError(f"{target} exists; pass --name for another name or --force to replace it")
    if path.is_dir():
        return _import_folder(path, target, link=link)
    if link:
        raise UserError("--link applies to model folders; a GGUF file is converted, not linked")
    inspect_gguf(path)  # a bad file is refused before any folder exists
    with staged_folder(target, replace=force) as staging:
        convert_gguf(path, staging, source=label, progress=progress)
    return target


def _import_folder(path: Path, target: Path, *, link: bool) -> Path:
    if not (path / "config.json").exists() or not any(path.glob("*.safetensors")):
        raise UserError(f"{path} is not a Hugging Face model folder (config.json and *.safetensors expected)")
    if link:
        if target.is_symlink() or target.exists():
            target.unlink() if target.is_symlink() else shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path, target_is_directory=True)
        return target

    with staged_folder(target, replace=True) as staging:
        shutil.copytree(path, staging, dirs_exist_ok=True)
        (staging / MODEL_MARKER).write_text(json.dumps({"source": str(path), "converted": "copied"}) + "\n")
    return target


def _safe_name(name: str) -> str:
    """A folder name from ``publisher/repo/file.gguf`` or ``model:tag``."""
    name = re.sub(r"\.gguf$", "", name.rsplit("/", 1)[-1] if name.endswith(".gguf") else name)
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    if not cleaned:
        raise UserError(f"--name {name!r} has no usable characters; use letters, digits, '.', '_' or '-'")
    return cleaned
