"""A model server that dies comes back with its model: the state file that records what was loaded
(through the reference API), a server started on it that loads it again, and the web app's proxy
ending a stream the model server cut with an ``error`` event. `forgellm start` end to end (SIGKILL
mid-stream) is in tests/test_start.py."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from forgellm.serving.app import create_app as create_server_app
from forgellm.serving.main import RunningServer, ServerOptions
from forgellm.web.app import create_app as create_web_app
from tests.engine_helpers import build_peft_adapter
from tests.server_helpers import wait_until

RAW = {"prompt": "The quick brown fox", "format": "raw", "temperature": 0, "max_tokens": 6}


def model_server(state_file: Path) -> RunningServer:
    return RunningServer(
        create_server_app({"FORGELLM_ENGINE": "torch", "FORGELLM_STATE_FILE": str(state_file)}), ServerOptions(port=0)
    )


def test_a_server_restarted_on_its_state_file_serves_the_model_and_adapter_it_had(tmp_path, tiny_model_dir):
    state_file = tmp_path / "logs" / "model-server.state.json"
    adapter = build_peft_adapter(tiny_model_dir, tmp_path / "lora")
    first = model_server(state_file)
    try:
        http = httpx.Client(base_url=first.url, timeout=120)
        assert http.post("/api/model/load", json={"model": str(tiny_model_dir), "adapter": str(adapter)}).is_success
        before = http.post("/api/model/generate", json=RAW).json()
        assert json.loads(state_file.read_text()) == {
            "model": str(tiny_model_dir.resolve()),
            "adapter": str(adapter.resolve()),
            "engine": "torch",
        }
        # A model used by name (OpenAI style) is not the current one: the record stays.
        assert http.post("/api/model/generate", json={**RAW, "model": str(tiny_model_dir)}).is_success
        assert json.loads(state_file.read_text())["adapter"] == str(adapter.resolve())
    finally:
        first.stop()  # closing the cache is not an unload the user asked for: the record stays
    assert state_file.exists()

    second = model_server(state_file)
    try:
        assert second.app.extensions["forgellm.registry"].restore() is not None
        assert not state_file.exists()  # until the reload succeeds
        http = httpx.Client(base_url=second.url, timeout=120)
        again = http.post("/api/model/generate", json=RAW)  # no load: waits for the reload
        assert again.status_code == 200, again.text
        assert again.json()["text"] == before["text"] and again.json()["adapter"] == "lora"
        assert wait_until(state_file.exists, 10)
        http.post("/api/model/unload", json={}).raise_for_status()
        assert not state_file.exists()  # unloaded on purpose: nothing to reload
    finally:
        second.stop()


def test_a_recorded_model_that_no_longer_exists_is_not_reloaded(tmp_path, tiny_model_dir):
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"model": str(tmp_path / "gone"), "adapter": None, "engine": "torch"}))
    server = model_server(state_file)
    try:
        from forgellm.errors import NotFoundError

        with pytest.raises(NotFoundError):
            server.app.extensions["forgellm.registry"].restore()
        assert httpx.post(f"{server.url}/api/model/generate", json=RAW, timeout=30).status_code == 409
    finally:
        server.stop()


class CuttingServer:
    """An HTTP peer that answers a streamed generate with two token events, then drops the connection
    (what the web app sees when the model server is killed mid-answer)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.recv(65536)
        events = b"".join(b'data: {"type":"token","text":"%s"}\n\n' % word for word in (b"Once", b" upon"))
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(events), events)
            + b"20\r\ndata: {\"type\":\"tok"
        )  # cut mid-event
        conn.close()


@pytest.fixture
def web(workspace: Path) -> Iterator[tuple[httpx.Client, CuttingServer]]:
    upstream = CuttingServer()
    app = create_web_app({"WORKSPACE": workspace, "START_BACKGROUND": False, "MODEL_SERVER_URL": upstream.url})
    yield app.test_client(), upstream


def test_the_proxy_ends_a_cut_stream_with_an_error_event(web):
    client, upstream = web
    answer = client.post("/api/model/generate", json={"prompt": "Once", "stream": True})
    assert answer.status_code == 200
    lines = [line for line in answer.get_data(as_text=True).split("\n") if line.startswith("data: ")]
    events = []
    for line in lines:
        try:
            events.append(json.loads(line[len("data: ") :]))
        except ValueError:
            events.append(None)  # the event the server was cut in the middle of
    assert [e["text"] for e in events[:2]] == ["Once", " upon"]
    last = events[-1]
    assert last["type"] == "error" and last["error"]["type"] == "server_unavailable"
    assert (
        "stopped in the middle of the answer" in last["error"]["message"] and upstream.url in last["error"]["message"]
    )
