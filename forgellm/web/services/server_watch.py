"""Watches the model server so every open page shows whether it is up, and sees a restart.

A restart is told by the server's start time (now minus the ``uptime_seconds`` of its
``/api/health``): a later start time than the one seen before means a new process, whether
or not a check happened to fall in the moment it was down.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from flask_socketio import SocketIO

from forgellm.security import client_headers

# Two start times closer than this are the same process (clock jitter between two checks).
SAME_PROCESS_S = 1.0


class ServerWatch:
    def __init__(self, socketio: SocketIO, url: str, token: str | None = None):
        self.socketio = socketio
        self.url = url.rstrip("/")
        self.headers = client_headers(token)
        self.restarts = 0
        self.restarted_at: float | None = None
        self._started_at: float | None = None
        self._lock = threading.Lock()
        self.last: dict[str, Any] = self._state(False, None)

    def _state(self, up: bool, status: dict[str, Any] | None) -> dict[str, Any]:
        return {"up": up, "url": self.url, "status": status, "restarts": self.restarts,
                "restarted_at": self.restarted_at}

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
                if self._started_at is not None and started_at - self._started_at > SAME_PROCESS_S:
                    self.restarts += 1
                    self.restarted_at = started_at
                self._started_at = started_at
                current = self._state(True, status)
            changed = current != self.last
            self.last = current
        if changed:
            self.socketio.emit("server_status", current)
        return current
