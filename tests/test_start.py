"""`forgellm start` as a user runs it: with an access token, a model server killed while serving
comes back with the model it had loaded, the cut stream ends with an error event, the web app
reports the restart (HTTP and SocketIO), and SIGTERM stops every process it started."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest
import socketio

from tests.web_helpers import StartedApp, alive, descendants, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_with_a_token_a_killed_server_is_restarted_and_reported_and_sigterm_leaves_no_process(
    tmp_path: Path, tiny_model_dir: Path
):
    workspace = tmp_path / "ws"
    shutil.copytree(tiny_model_dir, workspace / "models" / "base" / "tiny")
    shutil.copytree(REPO / "dataset" / "sample" / "cpt", workspace / "dataset" / "cpt")
    token = "s3cret-" * 5  # on loopback too: then both servers require it, and the web app passes it on
    app = StartedApp(workspace, token=token)
    statuses: list[dict] = []
    sio = socketio.Client(reconnection=False)
    sio.on("server_status", statuses.append)
    try:
        assert httpx.get(f"{app.url}/api/runs").status_code == 401
        assert httpx.get(f"http://127.0.0.1:{app.server_port}/api/model/status").status_code == 401
        http = httpx.Client(base_url=app.url, timeout=180, headers=app.headers)
        sio.connect(app.url, transports=["polling"], auth={"token": token})
        assert wait_for(lambda: statuses and statuses[-1]["up"], 30), statuses
        # A training run started from the web app: a grandchild that must not outlive `start`.
        job = http.post(
            "/api/training/start",
            json={
                "config": {
                    "model_name": "tiny",
                    "input_dir": "dataset/cpt",
                    "max_iterations": 5000,
                    "max_seq_length": 32,
                    "batch_size": 1,
                    "data_mixture_ratio": 1.0,
                    "engine": "torch",
                    "steps_per_eval": 1000,
                }
            },
        )
        assert job.status_code == 202, job.text
        assert http.post("/api/model/load", json={"model": "tiny"}).status_code == 200

        # Kill the model server in the middle of a streamed answer.
        server = app.child("forgellm server")
        streamed: list[str] = []
        with http.stream(
            "POST",
            "/api/model/generate",
            json={"prompt": "Once", "max_tokens": 4000, "stream": True, "temperature": 1.0},
        ) as answer:
            assert answer.status_code == 200
            for line in answer.iter_lines():
                streamed.append(line)
                if len(streamed) == 3:
                    os.kill(server, signal.SIGKILL)
        assert len(streamed) >= 3 and not any("[DONE]" in line for line in streamed), "the stream ended early"
        events = [
            json.loads(line[len("data: ") :]) for line in streamed if line.startswith("data: {") and line.endswith("}")
        ]
        assert not any(e.get("type") == "done" for e in events)
        assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "server_unavailable", streamed[-3:]

        assert wait_for(lambda: http.get("/api/server/status").json()["restarts"] == 1, 120), app.log()
        restarted = http.get("/api/server/status").json()
        assert restarted["up"] and restarted["restarted_at"]
        assert wait_for(lambda: any(s["restarts"] == 1 and s["up"] for s in statuses), 10), statuses
        assert not alive(server) and app.child("forgellm server") != server

        # The restarted server loaded its model again: generate works without a load.
        answer = http.post("/api/model/generate", json={"prompt": "Once", "max_tokens": 4})
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1, answer.text
        assert answer.json()["model"] == "tiny"
        assert http.get("/api/model/status").json()["loaded"]
        assert wait_for(lambda: http.get("/api/training/status").json()["active"], 60)
    finally:
        if sio.connected:
            sio.disconnect()
        started = descendants(app.process.pid)
        code = app.stop()
    assert code == 0, app.log()
    assert len(started) >= 3, f"expected server, web app and trainer among {started}"
    assert [pid for pid in started if alive(pid)] == [], "processes left after forgellm start exited"
    assert "stopping model server" in app.log() and "stopping web app" in app.log()
