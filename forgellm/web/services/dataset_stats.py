"""Data stats of a dataset path, computed by ``forgellm data stats --json`` in its own process
(tokenizers stay out of the web process) with the data settings a request gives (as options, see
`forgellm.cli.data_options.to_args`), cached until a file under the paths changes.

The endpoint is a GET any page can trigger, so the processes are bounded: at most
``max_processes`` run at once (another request for different stats gets 429 and tries again),
a request for stats being computed waits for that process instead of starting its own, and
the cache keeps the last ``MAX_CACHED`` results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from forgellm.cli.data_options import to_args
from forgellm.data.settings import DataSettings
from forgellm.errors import ForgeError, UserError
from forgellm.workspace import Workspace

TIMEOUT_S = 600
MAX_PROCESSES = 2
MAX_CACHED = 64


class StatsBusy(UserError):
    status = 429
    kind = "rate_limit_error"
    retry_after_s = 5  # the web form asks again on its own; other clients learn when from the header


class _Pending:
    """A computation in flight that other requests for the same stats wait on."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        self.error: ForgeError | None = None


class DatasetStats:
    def __init__(self, workspace: Workspace, *, max_processes: int = MAX_PROCESSES):
        self.workspace = workspace
        self.max_processes = max_processes
        self._cache: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._running: dict[tuple, _Pending] = {}
        self._lock = threading.Lock()

    def get(
        self, path: Path, mode: str | None, tokenizer: Path | None, settings: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The stats of ``path`` (a confined dataset path) with the tokenizer of the model folder
        ``tokenizer`` and the data ``settings`` given (``{field: value}``; the rest are the defaults)."""
        # A setting at its default is the same as none given: the form's stats line and its
        # estimate (which sends every data key of the config) then share one computation.
        settings = {k: v for k, v in (settings or {}).items() if v != DataSettings.model_fields[k].default}
        folders = tuple(_signature(Path(v)) for k, v in sorted(settings.items()) if isinstance(v, Path))
        key = (
            str(path),
            mode,
            str(tokenizer) if tokenizer else None,
            tuple(sorted((k, str(v)) for k, v in settings.items())),
            _signature(path),
            folders,
        )
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            pending = self._running.get(key)
            owner = pending is None
            if pending is None:
                if len(self._running) >= self.max_processes:
                    raise StatsBusy(
                        f"{len(self._running)} data stats computations are running already, the most this "
                        "app runs at once; try again when they finish"
                    )
                pending = self._running[key] = _Pending()
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            assert pending.result is not None
            return pending.result
        try:
            pending.result = self._compute(path, mode, tokenizer, settings)
        except ForgeError as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                del self._running[key]
                if pending.result is not None:
                    self._cache[key] = pending.result
                    while len(self._cache) > MAX_CACHED:
                        self._cache.popitem(last=False)
            pending.done.set()
        return pending.result

    def _compute(
        self, path: Path, mode: str | None, tokenizer: Path | None, settings: dict[str, Any]
    ) -> dict[str, Any]:
        argv = [sys.executable, "-m", "forgellm", "data", "stats", str(path), "--json"]
        argv += ["--mode", mode] if mode else []
        argv += ["--model", str(tokenizer)] if tokenizer else []
        argv += to_args(settings)
        env = {**os.environ, "FORGELLM_HOME": str(self.workspace.root)}
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                cwd=self.workspace.root,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                f"data stats of {path.name} took over {TIMEOUT_S} s; run `forgellm data stats` in a terminal"
            ) from None
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["data stats failed"])[-1].removeprefix("error: ")
            raise UserError(message)
        try:
            return json.loads(done.stdout)
        except ValueError:
            raise UserError("`forgellm data stats --json` did not print JSON") from None


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
