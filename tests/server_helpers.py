"""A real model server (waitress on a free port, in a thread) for the server tests, and helpers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from forgellm.serving.app import create_app
from forgellm.serving.main import RunningServer, ServerOptions
from tests.tiny_model import build_tiny_llama


@pytest.fixture(scope="session")
def other_tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny llama (other weights), to switch between models."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-b") / "tiny-llama-b", seed=1)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = RunningServer(create_app({"FORGELLM_ENGINE": "torch", "FORGELLM_MAX_BODY_BYTES": 256 * 1024}),
                            ServerOptions(port=0))
    yield running
    running.stop()


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def sse_events(response: httpx.Response) -> Iterator[Any]:
    """The ``data:`` payloads of a server-sent-events response (JSON decoded, ``[DONE]`` as is)."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            yield payload if payload == "[DONE]" else json.loads(payload)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
