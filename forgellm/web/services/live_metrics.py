"""Live metrics over SocketIO.

A background task tails the ``metrics.jsonl`` of every watched run by file offset and pushes
each new complete line to the room ``run:<id>`` within one poll interval (0.5 s). A browser
that (re)subscribes sends the index of the last event it has; it joins the room first and
then receives everything after that index from the file, so it misses nothing. It may get
an event twice (live and in the catch-up); the client drops indices it already has.

Every message is ``metrics`` ``{"run", "start", "events"}``: ``events[i]`` has index
``start + i``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask_socketio import SocketIO

from forgellm.runs.events import read_new_events
from forgellm.runs.summary import read_status
from forgellm.web.services import runs as run_files
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 2000


@dataclass
class _Tail:
    path: Path
    offset: int = 0
    count: int = 0


def room(rid: str) -> str:
    return f"run:{rid}"


class LiveMetrics:
    """Tails watched runs and pushes their new events; also rediscovers running runs."""

    def __init__(
        self,
        socketio: SocketIO,
        workspace: Workspace,
        *,
        interval: float = 0.5,
        on_tick: Callable[[], object] | None = None,
    ):
        self.socketio = socketio
        self.workspace = workspace
        self.interval = interval
        self.on_tick = on_tick  # extra periodic work (training status broadcast)
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        """Start the background task once (idempotent)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self.socketio.start_background_task(self._loop)

    def _loop(self) -> None:
        ticks = 0
        while True:
            try:
                if ticks % 4 == 0:
                    self.watch_running()
                    if self.on_tick:
                        self.on_tick()
                self.poll_once()
            except Exception:  # a bad file must not kill the stream for every other run
                log.exception("live metrics poll failed")
            ticks += 1
            self.socketio.sleep(self.interval)

    def watch(self, rid: str, path: Path) -> None:
        """Start tailing ``rid`` from the current end of its file (history comes from catch_up)."""
        with self._lock:
            if rid in self._tails:
                return
            events, offset = read_new_events(path / "metrics.jsonl")
            self._tails[rid] = _Tail(path, offset, len(events))

    def watch_running(self) -> None:
        for path in run_files.run_dirs(self.workspace):
            if read_status(path).get("status") == "running":
                self.watch(run_files.run_id(self.workspace, path), path)

    def poll_once(self) -> None:
        """Read every watched file's new complete lines and push them to the run's room."""
        with self._lock:
            batches = []
            for rid, tail in self._tails.items():
                events, tail.offset = read_new_events(tail.path / "metrics.jsonl", tail.offset)
                if events:
                    batches.append((rid, tail.count, events))
                    tail.count += len(events)
        for rid, start, events in batches:
            self.socketio.emit("metrics", {"run": rid, "start": start, "events": events}, to=room(rid))

    def catch_up(self, rid: str, path: Path, after: int) -> list[dict[str, Any]]:
        """Messages with every event whose index is greater than ``after``, in chunks."""
        events, _ = read_new_events(path / "metrics.jsonl")
        first = max(after + 1, 0)
        return [
            {"run": rid, "start": i, "events": events[i : i + CATCH_UP_CHUNK]}
            for i in range(first, len(events), CATCH_UP_CHUNK)
        ] or [{"run": rid, "start": first, "events": []}]
