"""The reference API through HTTP on a real waitress server: load, status, generate, stream,
switch and switch back, adapters, unload, the OpenAPI document and the CLI command."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.serving.client import ServerClient
from forgellm.errors import ConflictError, NotFoundError, UserError
from tests.engine_helpers import build_peft_adapter
from tests.server_helpers import http, other_tiny_model_dir, server, sse_events  # noqa: F401 (fixtures)

GREEDY = {"temperature": 0, "max_tokens": 8}
SAMPLED = {"temperature": 1, "seed": 3, "max_tokens": 8}  # random tiny models all answer greedy "\n\n..."


def test_health_and_nothing_loaded(http: httpx.Client) -> None:
    assert http.get("/api/health").json()["status"] == "ok"
    status = http.get("/api/model/status").json()
    assert status["loaded"] is False and status["model"] is None and status["cache"] == []
    answer = http.post("/api/model/generate", json={"prompt": "Hi"})
    assert answer.status_code == 409
    assert "load" in answer.json()["error"]["message"] and answer.json()["error"]["type"] == "conflict_error"


def test_load_status_generate_stream(http: httpx.Client, tiny_model_dir: Path) -> None:
    loaded = http.post("/api/model/load", json={"model": str(tiny_model_dir)}).json()
    assert loaded["loaded"] and loaded["engine"] == "torch" and loaded["type"] == "instruct"
    status = http.get("/api/model/status").json()
    assert status["loaded"] and status["model"] == tiny_model_dir.name and status["adapter"] is None
    assert status["memory_bytes"] > 1_000_000 and status["load_seconds"] > 0
    assert status["busy"] is False and status["queue_length"] == 0 and status["type"] == "instruct"

    whole = http.post("/api/model/generate", json={"prompt": "Hello", **GREEDY, "temperature": 1, "seed": 3}).json()
    assert whole["finish_reason"] == "length" and whole["usage"]["completion_tokens"] == 8
    assert whole["usage"]["total_tokens"] == whole["usage"]["prompt_tokens"] + 8
    assert whole["timings"]["time_to_first_token"] > 0 and whole["text"]

    with http.stream("POST", "/api/model/generate",
                     json={"prompt": "Hello", **GREEDY, "temperature": 1, "seed": 3, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    tokens, done = events[:-1], events[-1]
    assert all(e["type"] == "token" for e in tokens) and done["type"] == "done"
    assert "".join(e["text"] for e in tokens) == whole["text"]  # same seed, same answer
    assert [e["completion_tokens"] for e in tokens] == sorted(e["completion_tokens"] for e in tokens)
    assert done["usage"] == whole["usage"] and done["finish_reason"] == "length"
    assert done["timings"]["tokens_per_second"] > 0


def test_messages_format_and_stop(http: httpx.Client, tiny_model_dir: Path) -> None:
    http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
    chat = http.post("/api/model/generate", json={"messages": [{"role": "user", "content": "Hi"}], **GREEDY}).json()
    raw = http.post("/api/model/generate", json={"prompt": "Hi", "format": "raw", **GREEDY}).json()
    # The chat template wraps the turn in its markers: many more prompt tokens than the raw text.
    assert chat["usage"]["prompt_tokens"] > raw["usage"]["prompt_tokens"] + 5
    reference = http.post("/api/model/generate", json={"prompt": "Hi", "temperature": 1, "seed": 5,
                                                      "max_tokens": 12}).json()["text"]
    stop = reference[3:6]
    if stop.strip():
        cut = http.post("/api/model/generate", json={"prompt": "Hi", "temperature": 1, "seed": 5, "max_tokens": 12,
                                                    "stop": [stop]}).json()
        assert cut["finish_reason"] == "stop" and cut["text"] == reference[:reference.index(stop)]


def test_switch_and_switch_back_is_cached(http: httpx.Client, tiny_model_dir: Path, other_tiny_model_dir: Path) -> None:
    first = http.post("/api/model/load", json={"model": str(tiny_model_dir)}).json()
    other = http.post("/api/model/load", json={"model": str(other_tiny_model_dir)}).json()
    assert http.get("/api/model/status").json()["model"] == other_tiny_model_dir.name
    back = http.post("/api/model/load", json={"model": str(tiny_model_dir)}).json()
    assert back["load_seconds"] == first["load_seconds"]  # the same loaded model, not a reload
    assert back["seconds"] < 0.1
    status = http.get("/api/model/status").json()
    assert status["model"] == tiny_model_dir.name
    assert {m["id"] for m in status["cache"]} >= {tiny_model_dir.name, other_tiny_model_dir.name}
    assert status["cache"][0]["current"] and status["cache"][0]["id"] == tiny_model_dir.name  # most recent first
    # The two models really differ.
    a = http.post("/api/model/generate", json={"prompt": "Hi", **SAMPLED}).json()["text"]
    b = http.post("/api/model/generate", json={"prompt": "Hi", "model": str(other_tiny_model_dir), **SAMPLED}).json()
    assert b["model"] == other_tiny_model_dir.name and b["text"] != a


def test_adapter_loads_by_itself_or_with_its_model(http: httpx.Client, tiny_model_dir: Path,
                                                   tmp_path: Path) -> None:
    adapter = build_peft_adapter(tiny_model_dir, tmp_path / "lora")
    with_model = http.post("/api/model/load", json={"model": str(tiny_model_dir), "adapter": str(adapter)}).json()
    assert with_model["adapter"] == "lora" and with_model["model"] == tiny_model_dir.name
    raw = {"prompt": "The quick brown fox", "format": "raw", "temperature": 0, "max_tokens": 8}
    adapted = http.post("/api/model/generate", json=raw).json()["text"]
    alone = http.post("/api/model/load", json={"model": str(adapter)}).json()  # an adapter brings its base model
    assert alone["load_seconds"] == with_model["load_seconds"]  # the same cache entry
    base = http.post("/api/model/generate", json={**raw, "model": str(tiny_model_dir)}).json()
    assert base["text"] != adapted
    memory = {m["id"]: m["memory_bytes"] for m in http.get("/api/model/status").json()["cache"]}
    assert memory["lora"] > memory[tiny_model_dir.name]
    http.post("/api/model/unload", json={"model": "lora"}).raise_for_status()


def test_unload_frees_and_refuses_generation(http: httpx.Client, tiny_model_dir: Path) -> None:
    http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
    unloaded = http.post("/api/model/unload").json()
    assert unloaded["unloaded"] == [tiny_model_dir.name]
    status = http.get("/api/model/status").json()
    assert status["loaded"] is False and tiny_model_dir.name not in {m["id"] for m in status["cache"]}
    assert http.post("/api/model/generate", json={"prompt": "Hi"}).status_code == 409
    assert http.post("/api/model/unload", json={"model": "never-loaded"}).status_code == 404
    everything = http.post("/api/model/unload", json={"all": True}).json()
    assert http.get("/api/model/status").json()["memory_in_use_bytes"] == 0, everything


def test_client_library(server, tiny_model_dir: Path) -> None:  # noqa: F811
    with ServerClient(server.url) as client:
        assert client.health()["status"] == "ok"
        client.load(str(tiny_model_dir))
        events = list(client.generate_stream(prompt="Hi", **GREEDY))
        whole = client.generate(prompt="Hi", **GREEDY)
        assert "".join(e["text"] for e in events if e["type"] == "token") == whole["text"]
        assert client.status()["model"] == tiny_model_dir.name
        with pytest.raises(NotFoundError):
            client.load("no-such-model-anywhere")
        with pytest.raises(UserError, match="max_tokens"):
            client.generate(prompt="Hi", max_tokens=0)
        client.unload()
        with pytest.raises(ConflictError):
            client.generate(prompt="Hi")
    with pytest.raises(UserError, match="not reachable"):
        ServerClient("http://127.0.0.1:9", connect_timeout=2).health()


def test_openapi_document_lists_every_endpoint(http: httpx.Client) -> None:
    doc = http.get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/api/model/load", "/api/model/unload", "/api/model/status", "/api/model/generate", "/api/health",
                 "/v1/models", "/v1/chat/completions", "/v1/completions"):
        assert path in doc["paths"], path
    generate = doc["paths"]["/api/model/generate"]["post"]
    schema_name = generate["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = doc["components"]["schemas"][schema_name]["properties"]
    assert fields["max_tokens"]["maximum"] == 32768 and fields["top_p"]["exclusiveMinimum"] == 0
    assert {"400", "404", "409", "413"} <= set(generate["responses"])


def test_cli_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(root, ["server", "--port", str(port)])
    assert result.exit_code != 0
    assert f"port {port}" in str(result.exception) and "--port" in str(result.exception)
