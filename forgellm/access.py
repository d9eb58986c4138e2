"""What a request to a ForgeLLM server may reach on disk: the one confinement rule.

A person at the terminal owns their disk, so the CLI takes any path it is given. A request
does not: every name or path that arrives in a request to the web app or the model server
goes through this module, at the point where the request is parsed.

* A **name** (a run, a published model, a run folder) is one path component, or
  ``kind/name`` where a kind is expected. It is never empty, ``.``, ``..``, ``~``-prefixed,
  and never contains a backslash or a NUL.
* A **path** (a dataset folder, an output folder, a model or adapter folder) is relative to the
  workspace, or absolute. A relative path follows the name rule component by component; an
  absolute one may not contain ``..``. Resolved (symlinks followed), it must lie inside an
  allowed root:

  - to write: the workspace (including its ``models/``, ``dataset/`` and ``data/`` folders where
    the user made them symlinks to another disk), or a folder listed in ``FORGELLM_ROOTS``
    (``os.pathsep``-separated absolute paths);
  - to read data: the same;
  - to read a model, adapter or tokenizer: the same, plus the local Hugging Face cache.

Errors name the request field, echo at most the value the caller sent (never a resolved
absolute path, which would tell a caller which folders exist), and say how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from forgellm.errors import AccessError, UserError
from forgellm.workspace import NAME_MAX, PATH_MAX, Workspace

ROOTS_ENV = "FORGELLM_ROOTS"

#: ``write``: runs and outputs; ``read``: data; ``model``: models, adapters, tokenizers.
Access = Literal["read", "write", "model"]


@dataclass(frozen=True)
class Roots:
    """The folders requests may reach: the workspace, the listed roots and the model cache."""

    workspace: Path
    listed: tuple[Path, ...] = ()
    model_cache: Path | None = None
    #: The workspace's own folders (models/, dataset/, data/) where the user made them symlinks
    #: to another disk: they are the workspace, wherever they point.
    layout: tuple[Path, ...] = ()

    @classmethod
    def of(cls, workspace: Workspace, environ: Mapping[str, str] | None = None, listed: str | None = None) -> Roots:
        """The roots of ``workspace``; ``listed`` (default ``$FORGELLM_ROOTS``) adds folders.

        Raises UserError for a listed root that is not an absolute path.
        """
        from forgellm.models.resolve import hf_cache_dir  # resolve imports this module

        env = os.environ if environ is None else environ
        text = env.get(ROOTS_ENV, "") if listed is None else listed
        roots = []
        for entry in (e.strip() for e in text.split(os.pathsep)):
            if not entry:
                continue
            path = Path(entry).expanduser()
            if not path.is_absolute():
                raise UserError(
                    f"{ROOTS_ENV} entry {entry!r} is not an absolute path; list absolute folders "
                    f"separated by {os.pathsep!r}, e.g. {ROOTS_ENV}=/data/corpora{os.pathsep}/scratch/runs"
                )
            roots.append(path.resolve())
        root = workspace.root.resolve()
        layout = tuple(
            dict.fromkeys(
                p.resolve() for p in (workspace.models_dir, workspace.dataset_dir, workspace.data_dir) if p.is_symlink()
            )
        )
        return cls(
            workspace=root, listed=tuple(dict.fromkeys(roots)), model_cache=hf_cache_dir().resolve(), layout=layout
        )

    def allowed(self, access: Access) -> tuple[Path, ...]:
        roots = (self.workspace, *self.layout, *self.listed)
        return (*roots, self.model_cache) if access == "model" and self.model_cache else roots

    def contain(
        self, path: Path, field: str, access: Access, *, given: str | None = None, within: Path | None = None
    ) -> Path:
        """``path`` resolved, if it lies inside the roots for ``access`` (or inside ``within``).

        AccessError (403) naming ``field`` otherwise; ``given`` is the caller's own value, the
        only path the message may show.
        """
        shown = repr(given) if given is not None else "the path"
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a name the file system refuses
            raise UserError(
                f"{field}: {shown} cannot be resolved; use a plain path inside the workspace", field=field
            ) from None
        roots = (within.resolve(),) if within is not None else self.allowed(access)
        if any(resolved == root or root in resolved.parents for root in roots):
            return resolved
        if within is not None:
            where = "its folder"
        else:
            where = (
                "the workspace"
                + (", the Hugging Face cache" if access == "model" else "")
                + f" or a folder listed in {ROOTS_ENV}"
            )
        raise AccessError(
            f"{field}: {shown} is outside {where}; requests may only reach those "
            f"(the server's user can add a folder to {ROOTS_ENV})",
            field=field,
        )


def check_name(value: str, field: str, *, kinds: tuple[str, ...] | None = None) -> str:
    """A name from a request: one component, or exactly ``kind/name`` with ``kind`` in ``kinds``."""
    parts = components(value, field)
    if kinds is None:
        if len(parts) != 1:
            raise UserError(f"{field}: {value!r} must be a single name, without '/'", field=field)
    elif len(parts) != 2:
        raise UserError(f"{field}: {value!r} must be <kind>/<name> with kind one of {', '.join(kinds)}", field=field)
    elif parts[0] not in kinds:  # e.g. base/<model> where only runs may be named: not allowed, not malformed
        raise AccessError(
            f"{field}: {value!r} is not allowed here; only {', '.join(k + '/<name>' for k in kinds)}", field=field
        )
    return value


def components(value: str, field: str) -> list[str]:
    """The '/'-separated components of a relative request path; refuses anything that could climb."""
    _check_text(value, field)
    if value.startswith("/"):
        raise UserError(f"{field}: {value!r} is absolute; give a name or a path relative to the workspace", field=field)
    parts = value.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise AccessError(
                f"{field}: {value!r} has an empty, '.' or '..' component; name the folder itself", field=field
            )
        if part.startswith("~") or "\\" in part:
            raise UserError(f"{field}: {value!r} may not start with '~' or contain a backslash", field=field)
    return parts


def request_path(
    value: str,
    field: str,
    roots: Roots,
    access: Access,
    *,
    base: Path | None = None,
    within: Path | None = None,
    relative_only: bool = False,
) -> Path:
    """A path from a request, resolved and confined (see the module docstring).

    Relative paths are taken from ``base`` (default the workspace); ``within`` narrows the
    allowed roots to one folder (the dataset browser); ``relative_only`` refuses absolute paths.
    """
    _check_text(value, field)
    path = Path(value)
    if path.is_absolute():
        if relative_only:
            raise UserError(f"{field}: {value!r} is absolute; give a path relative to the folder", field=field)
        if ".." in path.parts:
            raise AccessError(f"{field}: {value!r} has a '..' component; name the folder itself", field=field)
    else:
        components(value.rstrip("/") or value, field)
        path = (base or roots.workspace) / path
    return roots.contain(path, field, access, given=value, within=within)


def request_model(value: str, field: str, roots: Roots) -> str:
    """A model, adapter or tokenizer reference from a request: a name, or a path the roots allow.

    Only the reference itself is checked here; `forgellm.models.resolve.resolve` with ``roots``
    checks the folder it finds (a symlink inside the workspace may point elsewhere).
    """
    _check_text(value, field)
    if Path(value).is_absolute():
        request_path(value, field, roots, "model")
    else:
        components(value, field)
    return value


def _check_text(value: str, field: str) -> None:
    if not value:
        raise UserError(f"{field}: empty; give a name", field=field)
    if "\x00" in value:
        raise UserError(f"{field}: contains a NUL character", field=field)
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) > PATH_MAX or any(len(p.encode("utf-8", "surrogatepass")) > NAME_MAX for p in value.split("/")):
        raise UserError(f"{field}: too long (at most {NAME_MAX} bytes a name, {PATH_MAX} in all)", field=field)
