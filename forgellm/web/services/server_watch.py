"""Watches the model server so every open page shows whether it is up, and sees a restart.

A restart is told by the server's start time (now minus the ``uptime_seconds`` of its
``/api/health``): a later start time than the one seen before means a new process, whether
or not a check happened to fall in the moment it was down. The count, the last restart and the
server's start time are kept in a small state file, so a restart of the web app itself
neither resets the count nor misses a server restart that happened while it was down.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
from flask_socketio import SocketIO

from forgellm.jsonio import read_json, write_json_atomic
from forgellm.security import client_headers

# Two start times closer than this are the same process (clock jitter between two checks).
SAME_PROCESS_S = 1.0


class ServerWatch:
    def __init__(self, socketio: SocketIO, url: str, token: str | None = None, state_file: Path | None = None):
        self.socketio = socketio
        self.url = url.rstrip("/")
        self.headers = client_headers(token)
        self.state_file = state_file
        saved = (read_json(state_file) if state_file else None) or {}
        if saved.get("url") != self.url:  # another server: its history is not this one's
            saved = {}
        self.restarts = int(saved.get("restarts") or 0)
        self.restarted_at: float | None = saved.get("restarted_at")
        self._started_at: float | None = saved.get("started_at")
        self._lock = threading.Lock()
        self.last: dict[str, Any] = self._state(False, None)

    def _state(self, up: bool, status: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "up": up,
            "url": self.url,
            "status": status,
            "restarts": self.restarts,
            "restarted_at": self.restarted_at,
        }

    def _ask(self) -> tuple[float, dict[str, Any] | None]:
        """The server's start time and its status (None when it answered with an error)."""
        with httpx.Client(base_url=self.url, timeout=1.0, headers=self.headers) as client:
            health = client.get("/api/health").json()
            response = client.get("/api/model/status")
        started_at = time.time() - float(health["uptime_seconds"])
        status = response.json() if response.is_success else None
        if isinstance(status, dict):
            status.pop("process_rss_bytes", None)  # changes on every call; not worth a broadcast
        return started_at, status

    def check(self) -> dict[str, Any]:
        """Ask the server now; broadcast ``server_status`` when anything but the clock changed."""
        with self._lock:
            try:
                started_at, status = self._ask()
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                current = self._state(False, None)
            else:
                new_process = self._started_at is None or abs(started_at - self._started_at) > SAME_PROCESS_S
                if self._started_at is not None and started_at - self._started_at > SAME_PROCESS_S:
                    self.restarts += 1
                    self.restarted_at = started_at
                self._started_at = started_at
                if new_process:
                    self._save()
                current = self._state(True, status)
            changed = current != self.last
            self.last = current
        if changed:
            self.socketio.emit("server_status", current)
        return current

    def _save(self) -> None:
        if self.state_file is None:
            return
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(
                self.state_file,
                {
                    "url": self.url,
                    "restarts": self.restarts,
                    "restarted_at": self.restarted_at,
                    "started_at": self._started_at,
                },
            )
        except OSError:
            pass  # the count then starts over after a web restart; watching goes on
