"""What the model server had loaded, kept in a small file so a restarted server loads it again.

``forgellm start`` runs the model server with ``--state-file``: each successful load through
the reference API (or ``--model``) writes the model, adapter and engine there, an unload that
leaves no current model removes it, and a server started with the file and no ``--model``
loads what it names. The file is removed *while* that reload runs and written back when it
succeeds, so a model whose loading kills the server is not loaded again at every restart.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: str  # the model folder
    adapter: str | None  # the adapter folder
    engine: str


class LoadedState:
    def __init__(self, path: Path):
        self.path = path

    def record(self, loaded: LoadedModel) -> None:
        """Write ``loaded`` atomically (a crash mid-write leaves the previous file or none)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(asdict(loaded)))
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk must not fail the load the user asked for
            log.warning(
                "could not record the loaded model in %s (%s); it will not be reloaded after a restart", self.path, exc
            )

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def read(self) -> LoadedModel | None:
        """The recorded model, or None (no file, or one that is not ours: it is then ignored and logged)."""
        try:
            data = json.loads(self.path.read_text())
            return LoadedModel(model=str(data["model"]), adapter=data.get("adapter"), engine=str(data["engine"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable loaded-model file %s (%s)", self.path, exc)
            return None
