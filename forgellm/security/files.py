"""The deletion rule for requests: only what ForgeLLM created, and only runs and published models.

A request may delete ``cpt/<run>`` and ``ift/<run>`` folders that carry the run marker
(``.forgellm-run``) and ``published/<model>`` folders that carry the model marker
(``.forgellm-model``), directly under ``<workspace>/models``. Base models, imported models
(they carry the model marker too, but live in ``models/base``), datasets and anything else
are never deletable from a request, whatever marker they carry.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from forgellm.access import check_name
from forgellm.errors import AccessError, NotFoundError, UserError
from forgellm.models.resolve import MODEL_MARKER
from forgellm.runs.layout import RUN_KINDS, RUN_MARKER
from forgellm.security.requests import DELETABLE_KINDS
from forgellm.workspace import Workspace

logger = logging.getLogger(__name__)


def safe_delete(name: str, workspace: Workspace | None = None, *, field: str = "name") -> Path:
    """Delete ``kind/name`` (kind cpt, ift or published) if ForgeLLM created it; returns the path.

    The folder must be a real folder (not a symlink) directly inside ``models/<kind>`` and carry
    the marker of its kind. Errors name ``field`` and show only ``name``.
    """
    workspace = workspace or Workspace.current()
    check_name(name, field, kinds=DELETABLE_KINDS)
    kind, leaf = name.split("/")
    folder = workspace.models(kind)
    link = folder / leaf
    # The link itself is checked before resolving, so a symlink to a marked folder is never
    # followed into a deletion.
    if link.is_symlink():
        raise AccessError(
            f"{field}: {name!r} is a symbolic link; ForgeLLM only deletes real run or model folders", field=field
        )
    target = workspace.confine(link, within=folder)
    if not target.exists():
        raise NotFoundError(f"{field}: {name!r} does not exist; GET /api/models lists the models", field=field)
    if not target.is_dir():
        raise UserError(f"{field}: {name!r} is a file; ForgeLLM only deletes run or model folders", field=field)
    marker = RUN_MARKER if kind in RUN_KINDS else MODEL_MARKER
    if not (target / marker).is_file():
        raise AccessError(
            f"{field}: {name!r} was not created by ForgeLLM (no {marker} marker); "
            "delete it yourself if you really mean to",
            field=field,
        )
    shutil.rmtree(target)
    logger.info("deleted %s", target)
    return target
