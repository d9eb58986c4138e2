"""The workspace: where datasets, models, processed data, configs and logs live.

The root is ``FORGELLM_HOME`` when set, else the current directory. Folders are created
on first use, never at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from forgellm.errors import AccessError, UserError

MODEL_KINDS = ("base", "cpt", "ift", "published")
# Linux limits; a longer name would make every later file operation fail with ENAMETOOLONG.
NAME_MAX = 255
PATH_MAX = 4096


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def current(cls) -> Workspace:
        """The workspace of this process: ``$FORGELLM_HOME`` or the current directory."""
        return cls(Path(os.environ.get("FORGELLM_HOME") or os.getcwd()).resolve())

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def models(self, kind: str) -> Path:
        """``models/<kind>`` for kind in base, cpt, ift, published."""
        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {', '.join(MODEL_KINDS)}")
        return self.models_dir / kind

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def configs_dir(self) -> Path:
        return self.root / "configs"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def ensure(self) -> Workspace:
        """Create the layout if it is missing; cheap to call repeatedly."""
        for path in (
            self.dataset_dir,
            self.data_dir,
            self.configs_dir,
            self.logs_dir,
            *(self.models(kind) for kind in MODEL_KINDS),
        ):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def path(self, path: str | os.PathLike[str]) -> Path:
        """A path the user named (CLI, config file): ``~`` expanded, relative to the root, anywhere.

        The person at the terminal owns their disk; request paths go through `forgellm.access`.
        """
        given = Path(os.fspath(path)).expanduser()
        return given if given.is_absolute() else self.root / given

    def confine(self, path: str | os.PathLike[str], *, within: Path | None = None) -> Path:
        """Resolve ``path`` (relative to ``within`` or the root) and refuse it if it leaves that folder.

        Symlinks are resolved first, so a link that points outside is refused too; ``..`` is
        refused by the same check. Absolute paths are accepted only when they land inside.
        """
        base = (within or self.root).resolve()
        text = str(os.fspath(path))
        if "\x00" in text:
            raise UserError("the path contains a NUL character; send a plain relative path")
        if len(text.encode("utf-8", "surrogatepass")) > PATH_MAX or any(
            len(part.encode("utf-8", "surrogatepass")) > NAME_MAX for part in Path(text).parts
        ):
            raise UserError(
                f"the path is too long (at most {NAME_MAX} bytes a name, {PATH_MAX} in all); "
                "use a shorter path inside the workspace"
            )
        candidate = Path(text)
        try:
            resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, name too long, unencodable name
            raise UserError(
                f"path {text!r} cannot be resolved ({exc.__class__.__name__}); use a plain path inside the workspace"
            ) from None
        if resolved != base and base not in resolved.parents:
            # The message never shows the resolved folders: it may answer an HTTP request.
            raise AccessError(
                f"path {text!r} leads outside {'its folder' if within else 'the workspace'}; use a path inside it"
            )
        return resolved
