"""Watches the model server so every open page shows whether it is up (and sees a restart)."""

from __future__ import annotations

from typing import Any

import httpx
from flask_socketio import SocketIO


class ServerWatch:
    def __init__(self, socketio: SocketIO, url: str):
        self.socketio = socketio
        self.url = url.rstrip("/")
        self.last: dict[str, Any] = {"up": False, "url": self.url, "status": None}

    def check(self) -> dict[str, Any]:
        """Ask the server for its status; broadcast ``server_status`` when it changed."""
        try:
            response = httpx.get(f"{self.url}/api/model/status", timeout=1.0)
            status = response.json() if response.is_success else None
            if isinstance(status, dict):
                status.pop("process_rss_bytes", None)  # changes on every call; not worth a broadcast
            current = {"up": True, "url": self.url, "status": status}
        except (httpx.HTTPError, ValueError):
            current = {"up": False, "url": self.url, "status": None}
        if current != self.last:
            self.last = current
            self.socketio.emit("server_status", current)
        return current
