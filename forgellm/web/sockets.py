"""SocketIO events: a browser subscribes to the runs it shows and gets their events live."""

from __future__ import annotations

from typing import Any

from flask_socketio import SocketIO, emit, join_room, leave_room

from forgellm.errors import ForgeError
from forgellm.security import authorize_socketio
from forgellm.web.services import runs as run_files
from forgellm.web.services.live_metrics import LiveMetrics, room
from forgellm.web.services.server_watch import ServerWatch
from forgellm.workspace import Workspace


def register(socketio: SocketIO, workspace: Workspace, live: LiveMetrics, watch: ServerWatch) -> None:
    @socketio.on("connect")
    def connect(auth: Any = None):
        authorize_socketio(auth if isinstance(auth, dict) else None)
        live.start()
        emit("server_status", watch.last)

    @socketio.on("subscribe")
    def subscribe(data: Any):
        """``{"run": id, "after": last index the browser has (-1 for none)}``."""
        data = data if isinstance(data, dict) else {}
        rid, after = data.get("run"), data.get("after", -1)
        if not isinstance(rid, str) or not isinstance(after, int):
            emit("metrics_error", {"message": "subscribe needs {\"run\": str, \"after\": int}"})
            return
        try:
            path = run_files.run_path(workspace, rid)
        except ForgeError as exc:
            emit("metrics_error", {"run": rid, "message": str(exc)})
            return
        # Join first, then read: a line written in between arrives live or in the catch-up.
        join_room(room(rid))
        live.watch(rid, path)
        for message in live.catch_up(rid, path, after):
            emit("metrics", message)

    @socketio.on("unsubscribe")
    def unsubscribe(data: Any):
        if isinstance(data, dict) and isinstance(data.get("run"), str):
            leave_room(room(data["run"]))
