"""Concurrency on a real waitress server: many clients at once, loads and unloads while
generating, and clients that hang up."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.server_helpers import http, other_tiny_model_dir, server, sse_events, wait_until  # noqa: F401

LONG = 4000  # tokens: minutes on this machine, so an answer that ends early was stopped


def _ask(url: str, model: str, seed: int, stream: bool) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=300)
    params = dict(
        model=model,
        messages=[{"role": "user", "content": f"Question {seed}"}],
        max_tokens=10,
        temperature=1.0,
        seed=seed,
    )
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**params, stream=True))
    return client.chat.completions.create(**params).choices[0].message.content


def test_eight_concurrent_clients_get_whole_correct_answers(server, tiny_model_dir: Path) -> None:  # noqa: F811
    model = str(tiny_model_dir)
    reference = [_ask(server.url, model, seed, stream=False) for seed in range(8)]
    assert len(set(reference)) > 1  # different seeds, different answers: a mix-up would show
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda s: _ask(server.url, model, s, stream=s % 2 == 0), range(8)))
    assert answers == reference


def _idle(http: httpx.Client) -> bool:  # noqa: F811
    return all(not m["busy"] and m["queue_length"] == 0 for m in http.get("/api/model/status").json()["cache"])


@pytest.fixture
def cancellations(caplog: pytest.LogCaptureFixture):
    """How many generations the server has cancelled because their client left (from its log)."""
    caplog.set_level(logging.INFO, logger="forgellm.serving.scheduler")
    return lambda: sum("the client went away" in r.getMessage() for r in caplog.records)


def test_streaming_client_that_disconnects_stops_its_generation(
    http: httpx.Client,
    server,  # noqa: F811
    tiny_model_dir: Path,
    cancellations,
) -> None:
    http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream(
            "POST",
            "/api/model/generate",  # greedy: the random model never ends it by itself
            json={"prompt": "Hi", "max_tokens": LONG, "temperature": 0, "stream": True},
        ) as response:
            events = sse_events(response)
            assert next(events)["type"] == "token"
            assert http.get("/api/model/status").json()["busy"]
    assert wait_until(lambda: _idle(http), timeout=10), "the generation went on after the client left"
    assert cancellations() == 1
    after = http.post("/api/model/generate", json={"prompt": "Hi", "max_tokens": 3}).json()
    assert after["usage"]["completion_tokens"] == 3 and after["timings"]["queue_seconds"] < 1


def test_waiting_client_that_disconnects_stops_its_generation(
    http: httpx.Client,
    server,  # noqa: F811
    tiny_model_dir: Path,
    cancellations,
) -> None:
    http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
    with httpx.Client(base_url=server.url, timeout=1.5) as client:
        try:
            client.post("/api/model/generate", json={"prompt": "Hi", "max_tokens": LONG, "temperature": 0})
            raise AssertionError("a 4000-token answer came back in 1.5 s")
        except httpx.ReadTimeout:
            pass  # the client gives up and closes the connection
    assert wait_until(lambda: _idle(http), timeout=10), "the generation went on after the client left"
    assert cancellations() == 1


def test_openai_streaming_client_that_disconnects_stops_its_generation(
    http: httpx.Client,
    server,  # noqa: F811
    tiny_model_dir: Path,
    cancellations,
) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=60)
    stream = client.chat.completions.create(
        model=str(tiny_model_dir),
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=LONG,
        temperature=0,
        stream=True,
    )
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    assert next(chunks).choices[0].delta.content
    stream.close()
    assert wait_until(lambda: _idle(http), timeout=10), "the generation went on after the client left"
    assert cancellations() == 1


def test_load_and_unload_while_generating(
    http: httpx.Client,
    server,
    tiny_model_dir: Path,  # noqa: F811
    other_tiny_model_dir: Path,
) -> None:
    http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
    expected = http.post(
        "/api/model/generate", json={"prompt": "Hi", "max_tokens": 40, "temperature": 1, "seed": 9}
    ).json()["text"]
    results: dict[str, object] = {}

    def stream_answer() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            with client.stream(
                "POST",
                "/api/model/generate",
                json={"prompt": "Hi", "max_tokens": 40, "temperature": 1, "seed": 9, "stream": True},
            ) as response:
                events = list(sse_events(response))
        results["text"] = "".join(e.get("text", "") for e in events if e["type"] == "token")
        results["done"] = events[-1]

    streamer = threading.Thread(target=stream_answer)
    streamer.start()
    assert wait_until(lambda: http.get("/api/model/status").json()["busy"], timeout=10)
    # Switch to another model and unload the one that is generating, mid-answer.
    http.post("/api/model/load", json={"model": str(other_tiny_model_dir)}).raise_for_status()
    unloaded = http.post("/api/model/unload", json={"model": tiny_model_dir.name})
    assert unloaded.status_code == 200
    streamer.join(timeout=120)
    assert results["text"] == expected and results["done"]["finish_reason"] == "length"
    assert http.get("/api/model/status").json()["model"] == other_tiny_model_dir.name
    assert http.post("/api/model/generate", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_clients_that_ask_for_the_same_unloaded_model_at_once_share_one_load(
    http: httpx.Client, server, other_tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:  # noqa: F811
    http.post("/api/model/unload", json={"all": True}).raise_for_status()
    caplog.set_level(logging.INFO, logger="forgellm.serving.scheduler")
    model = str(other_tiny_model_dir)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda seed: _ask(server.url, model, seed, stream=False), range(6)))
    assert all(answers)
    cache = http.get("/api/model/status").json()["cache"]
    assert [m["id"] for m in cache] == [other_tiny_model_dir.name]
    loads = [r for r in caplog.records if r.getMessage().startswith(f"loaded {other_tiny_model_dir.name} ")]
    assert len(loads) == 1
