"""Data stats of a dataset path, computed by ``forgellm data stats --json`` in its own process
(tokenizers stay out of the web process) with the data settings a request gives (as options, see
`forgellm.cli.data_options.to_args`), and cached until a file under the paths changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from forgellm.cli.data_options import to_args
from forgellm.errors import UserError
from forgellm.workspace import Workspace

TIMEOUT_S = 600


class DatasetStats:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._cache: dict[tuple, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, mode: str | None, model: str | None,
            settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """Stats of ``path`` with the data ``settings`` given (``{field: value}``; the rest are the defaults)."""
        settings = settings or {}
        folders = tuple(_signature(Path(v)) for k, v in sorted(settings.items()) if isinstance(v, Path))
        key = (str(path), mode, model, tuple(sorted((k, str(v)) for k, v in settings.items())), _signature(path),
               folders)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        argv = [sys.executable, "-m", "forgellm", "data", "stats", str(path), "--json"]
        argv += ["--mode", mode] if mode else []
        argv += ["--model", model] if model else []
        argv += to_args(settings)
        env = {**os.environ, "FORGELLM_HOME": str(self.workspace.root)}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=self.workspace.root,
                                  env=env, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UserError(f"data stats of {path.name} took over {TIMEOUT_S} s; run `forgellm data stats` in a terminal") from None
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["data stats failed"])[-1].removeprefix("error: ")
            raise UserError(message)
        try:
            stats = json.loads(done.stdout)
        except ValueError:
            raise UserError("`forgellm data stats --json` did not print JSON") from None
        with self._lock:
            self._cache[key] = stats
        return stats


def _signature(path: Path) -> tuple:
    """Sizes and mtimes of every file under ``path``: any change computes the stats again."""
    if path.is_file():
        st = path.stat()
        return ((path.name, st.st_size, st.st_mtime_ns),)
    out = []
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            out.append((os.path.join(folder, name), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))
