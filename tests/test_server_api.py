"""The reference API through HTTP on a real waitress server: load, status, generate, stream,
switch and switch back, adapters, unload, the OpenAPI document and the CLI command."""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import httpx
import pytest

from forgellm.errors import ConflictError, NotFoundError, UserError
from forgellm.serving.app import create_app
from forgellm.serving.client import ServerClient
from forgellm.serving.main import RunningServer, ServerOptions
from tests.cli_helpers import forgellm_error
from tests.engine_helpers import build_peft_adapter
from tests.server_helpers import (  # noqa: F401
    http,
    model_with_template,
    other_tiny_model_dir,
    server,
    sse_events,
    stop_string_in,
    wait_until,
)

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

    with http.stream(
        "POST", "/api/model/generate", json={"prompt": "Hello", **GREEDY, "temperature": 1, "seed": 3, "stream": True}
    ) as response:
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
    sampled = {"prompt": "Hi", "temperature": 1, "seed": 5, "max_tokens": 12}
    reference = http.post("/api/model/generate", json=sampled).json()["text"]
    stop = stop_string_in(reference)
    cut = http.post("/api/model/generate", json={**sampled, "stop": ["never in the text", stop]}).json()
    assert cut["finish_reason"] == "stop" and cut["text"] == reference[: reference.index(stop)]
    # Streaming shows the same cut text: nothing of the stop string leaks out before the cut.
    with http.stream("POST", "/api/model/generate", json={**sampled, "stop": stop, "stream": True}) as response:
        events = list(sse_events(response))
    assert "".join(e.get("text", "") for e in events) == cut["text"] and events[-1]["finish_reason"] == "stop"


def test_seed_makes_sampling_repeatable(http: httpx.Client, tiny_model_dir: Path) -> None:
    http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
    body = {"prompt": "Hi", "temperature": 1, "max_tokens": 10}
    same = {http.post("/api/model/generate", json={**body, "seed": 42}).json()["text"] for _ in range(2)}
    others = {http.post("/api/model/generate", json={**body, "seed": seed}).json()["text"] for seed in range(4)}
    assert len(same) == 1 and len(others | same) > 2


def test_switch_and_switch_back_is_cached(http: httpx.Client, tiny_model_dir: Path, other_tiny_model_dir: Path) -> None:
    first = http.post("/api/model/load", json={"model": str(tiny_model_dir)}).json()
    http.post("/api/model/load", json={"model": str(other_tiny_model_dir)}).raise_for_status()
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


def test_adapter_loads_by_itself_or_with_its_model(http: httpx.Client, tiny_model_dir: Path, tmp_path: Path) -> None:
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


def _run_folder(base: Path, out: Path) -> Path:
    """A training run written by the trainer's writers: two checkpoints (each a different adapter),
    the best one (lower validation loss) named by best.json, and final weights."""
    from forgellm.training.checkpoints import CheckpointStore
    from forgellm.training.run import prepare_folder

    prepare_folder(out, overwrite=False).release()
    store = CheckpointStore(out, max_keep=5)
    for seed, (step, val) in enumerate(((10, 1.0), (20, 2.0)), start=1):
        store.save(
            step, {"step": step, "val_loss": val}, lambda folder, seed=seed: build_peft_adapter(base, folder, seed=seed)
        )
    build_peft_adapter(base, out / "final", seed=3)
    return out


def test_adapter_as_run_folder_or_checkpoint(http: httpx.Client, tiny_model_dir: Path, tmp_path: Path) -> None:
    from forgellm.training.run import prepare_folder

    run = _run_folder(tiny_model_dir, tmp_path / "my-run")
    raw = {"prompt": "The quick brown fox", "format": "raw", "temperature": 1, "seed": 1, "max_tokens": 8}

    def answer(**load: str) -> tuple[dict, str]:
        loaded = http.post("/api/model/load", json=load)
        assert loaded.status_code == 200, loaded.text
        return loaded.json(), http.post("/api/model/generate", json=raw).json()["text"]

    by_run, final_text = answer(model=str(tiny_model_dir), adapter=str(run))  # a run means its final weights
    assert by_run["adapter"] == "my-run/final" and by_run["adapter_path"] == str(run / "final")
    alone, alone_text = answer(model=str(run))  # a run alone brings its base model
    assert alone["id"] == by_run["id"] and alone_text == final_text
    checkpoint = run / "checkpoints" / "step_000020"
    by_checkpoint, checkpoint_text = answer(model=str(tiny_model_dir), adapter=str(checkpoint))
    assert by_checkpoint["adapter_path"] == str(checkpoint) and checkpoint_text != final_text
    # A run without final weights yet means its best checkpoint.
    shutil.rmtree(run / "final")
    best, best_text = answer(model=str(tiny_model_dir), adapter=str(run))
    assert best["adapter"] == "my-run/checkpoints/step_000010"
    assert best_text not in (final_text, checkpoint_text)
    bare = tmp_path / "empty-run"
    prepare_folder(bare, overwrite=False).release()
    refused = http.post("/api/model/load", json={"model": str(tiny_model_dir), "adapter": str(bare)})
    assert refused.status_code == 404 and "has no checkpoints yet" in refused.json()["error"]["message"]
    http.post("/api/model/unload", json={"all": True}).raise_for_status()


def test_status_shows_busy_and_queue_length(http: httpx.Client, server, tiny_model_dir: Path) -> None:  # noqa: F811
    http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
    idle = http.get("/api/model/status").json()
    assert idle["busy"] is False and idle["queue_length"] == 0
    queued: dict[str, int] = {}

    def wait_in_queue() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            queued["tokens"] = client.post("/api/model/generate", json={"prompt": "Hi", "max_tokens": 2}).json()[
                "usage"
            ]["completion_tokens"]

    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream(
            "POST",
            "/api/model/generate",  # greedy: the random model never ends it
            json={"prompt": "Hi", "max_tokens": 4000, "temperature": 0, "stream": True},
        ) as running:
            events = sse_events(running)  # kept: dropping a half-read stream closes the connection
            next(events)
            waiter = threading.Thread(target=wait_in_queue)
            waiter.start()
            assert wait_until(lambda: http.get("/api/model/status").json()["queue_length"] == 1, timeout=10)
            status = http.get("/api/model/status").json()
            assert status["busy"] is True and status["cache"][0]["queue_length"] == 1
    waiter.join(timeout=60)  # the first client left: its generation stops and the queued one runs
    assert queued["tokens"] == 2
    status = http.get("/api/model/status").json()
    assert status["busy"] is False and status["queue_length"] == 0


def test_lru_cache_evicts_the_least_recently_used_model_to_fit_its_budget(
    tiny_model_dir: Path, other_tiny_model_dir: Path, tmp_path: Path
) -> None:
    third = model_with_template(tiny_model_dir, tmp_path / "tiny-c", None)
    weights = (tiny_model_dir / "model.safetensors").stat().st_size
    budget_gb = 2.5 * weights / 1024**3  # room for two of the three tiny models
    app = create_app({"FORGELLM_ENGINE": "torch", "FORGELLM_MEMORY_BUDGET_GB": budget_gb})
    with RunningServer(app, ServerOptions(port=0)) as running, httpx.Client(base_url=running.url, timeout=120) as http:  # noqa: F811

        def cached() -> list[str]:
            return [m["id"] for m in http.get("/api/model/status").json()["cache"]]

        for model in (tiny_model_dir, other_tiny_model_dir, tiny_model_dir):  # the first is the most recent now
            http.post("/api/model/load", json={"model": str(model)}).raise_for_status()
        assert cached() == [tiny_model_dir.name, other_tiny_model_dir.name]
        http.post("/api/model/load", json={"model": str(third)}).raise_for_status()
        assert cached() == [third.name, tiny_model_dir.name]  # the least recently used one went
        status = http.get("/api/model/status").json()
        assert status["memory_in_use_bytes"] <= status["memory_budget_bytes"]
        # Using a model through /v1 counts as use, too.
        http.post("/v1/completions", json={"model": tiny_model_dir.name, "prompt": "Hi", "max_tokens": 1})
        http.post("/api/model/load", json={"model": str(other_tiny_model_dir)}).raise_for_status()
        assert cached() == [other_tiny_model_dir.name, tiny_model_dir.name]


def test_a_model_larger_than_the_whole_budget_is_refused(tiny_model_dir: Path) -> None:
    app = create_app({"FORGELLM_ENGINE": "torch", "FORGELLM_MEMORY_BUDGET_GB": 0.001})
    with RunningServer(app, ServerOptions(port=0)) as running, httpx.Client(base_url=running.url) as client:
        refused = client.post("/api/model/load", json={"model": str(tiny_model_dir)})
        assert refused.status_code == 409 and "--memory-budget" in refused.json()["error"]["message"]
        assert client.get("/api/model/status").json()["cache"] == []


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
    for path in (
        "/api/model/load",
        "/api/model/unload",
        "/api/model/status",
        "/api/model/generate",
        "/api/health",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
    ):
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
        message = forgellm_error("server", "--port", str(port))
    assert f"port {port}" in message and "--port" in message
