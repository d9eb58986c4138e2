"""The model server with the embedded SmolLM2-135M-Instruct: real answers through HTTP and the
official ``openai`` client, switching to another model and back, eight clients at once, and
unloading that gives the memory back to the machine (measured as the process's RSS)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.server_helpers import http, server, sse_events  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_embedded_model_answers_switches_back_and_frees_its_memory(
    http: httpx.Client,
    server,  # noqa: F811
    tiny_model_dir: Path,
) -> None:
    http.post("/api/model/unload", json={"all": True}).raise_for_status()
    loaded = http.post("/api/model/load", json={"model": "default"}).json()
    assert loaded["model"] == "SmolLM2-135M-Instruct" and loaded["type"] == "instruct"
    status = http.get("/api/model/status").json()
    assert status["memory_bytes"] > 400e6 and status["load_seconds"] > 0 and not status["busy"]

    greedy = {"messages": QUESTION, "temperature": 0, "max_tokens": 12}
    whole = http.post("/api/model/generate", json=greedy).json()
    assert "Paris" in whole["text"]
    with http.stream("POST", "/api/model/generate", json={**greedy, "stream": True}) as response:
        events = list(sse_events(response))
    assert "".join(e.get("text", "") for e in events) == whole["text"] and events[-1]["usage"] == whole["usage"]

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=300)
    chat = client.chat.completions.create(model="default", messages=QUESTION, temperature=0, max_tokens=12)
    assert chat.choices[0].message.content == whole["text"]

    # Switch to another model and back: the embedded one is still in the cache.
    http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
    back = http.post("/api/model/load", json={"model": "default"}).json()
    assert back["load_seconds"] == loaded["load_seconds"] and back["seconds"] < 0.1
    http.post("/api/model/unload", json={"model": tiny_model_dir.name}).raise_for_status()

    def ask(seed: int) -> str:
        return (
            client.chat.completions.create(model="default", messages=QUESTION, temperature=1, seed=seed, max_tokens=4)
            .choices[0]
            .message.content
        )

    alone = [ask(seed) for seed in range(8)]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(ask, range(8))) == alone

    before = http.get("/api/model/status").json()["process_rss_bytes"]
    unloaded = http.post("/api/model/unload").json()
    assert unloaded["unloaded"] == ["SmolLM2-135M-Instruct"] and unloaded["memory_in_use_bytes"] == 0
    assert before - unloaded["process_rss_bytes"] > 0.8 * status["memory_bytes"], "unloading kept the weights"
