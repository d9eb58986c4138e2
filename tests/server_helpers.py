"""A real model server (waitress on a free port, in a thread) for the server tests, and helpers."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    running = RunningServer(
        create_app({"FORGELLM_ENGINE": "torch", "FORGELLM_MAX_BODY_BYTES": 256 * 1024}), ServerOptions(port=0)
    )
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
            payload = line[len("data: ") :]
            yield payload if payload == "[DONE]" else json.loads(payload)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# Chat templates as two model families ship them (verbatim logic, tokens as plain text): Gemma
# refuses a system turn; Qwen 3 reads `enable_thinking` and drops the thinking of earlier turns.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
QWEN3_TEMPLATE = (
    "{%- for message in messages %}{%- if message.role == 'assistant' %}"
    "{%- set content = message.content.split('</think>')[-1].lstrip('\n') %}{%- else %}"
    "{%- set content = message.content %}{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)


def model_with_template(tiny_model_dir: Path, out: Path, template: str | None) -> Path:
    """A copy of the tiny model whose tokenizer has ``template`` (None: no template, a base model)."""
    shutil.copytree(tiny_model_dir, out)
    if template is None:
        (out / "chat_template.jinja").unlink()
    else:
        (out / "chat_template.jinja").write_text(template)
    return out


def stop_string_in(text: str) -> str:
    """Three characters of ``text``, not at its start, not blank, first seen there: a stop string
    that must cut ``text`` right before it."""
    for i in range(1, len(text) - 2):
        candidate = text[i : i + 3]
        if candidate.strip() and text.index(candidate) == i:
            return candidate
    raise AssertionError(f"no usable stop string in {text!r}")
