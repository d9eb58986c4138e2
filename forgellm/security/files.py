"""Path confinement for paths that come from a request or a config, and the deletion rule.

Reading is allowed inside the workspace and inside the local Hugging Face cache (models
already downloaded by other tools); writing and deleting only inside the workspace.
Deletion is further limited to run and model folders ForgeLLM created, recognised by the
marker file it writes into each (``.forgellm-run`` / ``.forgellm-model``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from forgellm.errors import AccessError, NotFoundError, UserError
from forgellm.models.resolve import MODEL_MARKER, hf_cache_dir
from forgellm.runs.layout import RUN_MARKER
from forgellm.workspace import Workspace

logger = logging.getLogger(__name__)

MARKERS = (RUN_MARKER, MODEL_MARKER)


def confine_write(path: str | os.PathLike[str], workspace: Workspace | None = None,
                  *, within: Path | None = None) -> Path:
    """A path to write to: inside the workspace (or ``within``, itself inside it), symlinks resolved."""
    workspace = workspace or Workspace.current()
    if within is not None:
        workspace.confine(within)
    return workspace.confine(path, within=within)


def confine_read(path: str | os.PathLike[str], workspace: Workspace | None = None,
                 *, within: Path | None = None) -> Path:
    """A path to read: inside the workspace (or ``within``), or inside the local Hugging Face cache.

    The cache is only accepted for absolute paths (a relative path is always taken relative to
    the workspace), so ``..`` can never climb into it from a workspace name.
    """
    workspace = workspace or Workspace.current()
    try:
        return confine_write(path, workspace, within=within)
    except AccessError:
        cache = hf_cache_dir()
        if not Path(os.fspath(path)).is_absolute() or not cache.is_dir():
            raise
        try:
            return Workspace(cache.resolve()).confine(path)
        except AccessError:
            raise AccessError(f"path {os.fspath(path)!r} is outside the workspace {workspace.root} and the "
                              f"model cache {cache}; use a path inside the workspace") from None


def safe_delete(path: str | os.PathLike[str], workspace: Workspace | None = None) -> Path:
    """Delete a run or model folder that ForgeLLM created, and nothing else.

    The folder must lie strictly inside ``<workspace>/models``, be a real folder (not a
    symlink) and carry a ForgeLLM marker file. Returns the deleted path.
    """
    workspace = workspace or Workspace.current()
    models = workspace.models_dir.resolve()
    raw = Path(os.fspath(path))
    # Relative names are taken from models/ (e.g. "cpt/my-run"); the link itself is checked
    # before resolving, so a symlink to a marked folder is never followed into a deletion.
    unresolved = raw if raw.is_absolute() else models / raw
    if unresolved.is_symlink():
        raise AccessError(f"{os.fspath(path)!r} is a symbolic link; ForgeLLM only deletes real run or model folders")
    target = workspace.confine(unresolved, within=models)
    if target == models or target.parent == models:
        raise AccessError(f"{os.fspath(path)!r} is a models folder itself; name one run or model inside it")
    if not target.exists():
        raise NotFoundError(f"{os.fspath(path)!r} does not exist under {models}")
    if not target.is_dir():
        raise UserError(f"{os.fspath(path)!r} is a file; ForgeLLM only deletes run or model folders")
    if not any((target / marker).is_file() for marker in MARKERS):
        raise AccessError(f"{target} was not created by ForgeLLM (no {' or '.join(MARKERS)} marker); "
                          "delete it yourself if you really mean to")
    shutil.rmtree(target)
    logger.info("deleted %s", target)
    return target
