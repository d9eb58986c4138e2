"""Prompt formatting through HTTP: the model's own chat template decides, ``format`` overrides.

Each check compares a chat request with a raw request of the exact text the template should
produce: with the same seed, the same prompt gives the same tokens and the same answer, so
equal answers and prompt sizes show that the server formatted the conversation that way.
Tiny models get the templates of model families that behave differently (built locally).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.server_helpers import GEMMA_TEMPLATE, QWEN3_TEMPLATE, http, model_with_template, server  # noqa: F401

SAMPLED = {"temperature": 1, "seed": 7, "max_tokens": 6}


@pytest.fixture(scope="module")
def gemma_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_with_template(tiny_model_dir, tmp_path_factory.mktemp("gemma") / "tiny-gemma", GEMMA_TEMPLATE)


@pytest.fixture(scope="module")
def qwen_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_with_template(tiny_model_dir, tmp_path_factory.mktemp("qwen") / "tiny-qwen3", QWEN3_TEMPLATE)


@pytest.fixture(scope="module")
def base_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_with_template(tiny_model_dir, tmp_path_factory.mktemp("base") / "tiny-base", None)


def _generate(http: httpx.Client, model: Path, **body: object) -> dict:  # noqa: F811
    response = http.post("/api/model/generate", json={"model": str(model), **SAMPLED, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _same_prompt(a: dict, b: dict) -> bool:
    return a["usage"]["prompt_tokens"] == b["usage"]["prompt_tokens"] and a["text"] == b["text"]


def test_gemma_system_turn_goes_in_front_of_the_first_user_turn(
    http: httpx.Client,  # noqa: F811
    gemma_model: Path,
) -> None:
    chat = _generate(
        http, gemma_model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    )
    expected = "<|im_start|><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
    assert _same_prompt(chat, _generate(http, gemma_model, prompt=expected, format="raw"))
    # The `system` field takes the same way; without any system prompt nothing is merged.
    assert _same_prompt(chat, _generate(http, gemma_model, prompt="Hello", system="Be brief."))
    plain = _generate(http, gemma_model, prompt="Hello")
    assert plain["usage"]["prompt_tokens"] < chat["usage"]["prompt_tokens"]


def test_gemma_template_errors_are_a_400_naming_the_template(
    http: httpx.Client,  # noqa: F811
    gemma_model: Path,
) -> None:
    response = http.post(
        "/api/model/generate",
        json={
            "model": str(gemma_model),
            **SAMPLED,
            "messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi again"}],
        },
    )
    assert response.status_code == 400
    assert "chat template" in response.json()["error"]["message"]
    assert "alternate" in response.json()["error"]["message"]


def test_qwen_thinking_follows_the_template(http: httpx.Client, qwen_model: Path, server) -> None:  # noqa: F811
    question = [{"role": "user", "content": "Hello"}]
    prefix = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    # Thinking off (the default): the template writes an empty thinking block the answer follows.
    off = _generate(http, qwen_model, messages=question)
    assert _same_prompt(off, _generate(http, qwen_model, prompt=prefix + "<think>\n\n</think>\n\n", format="raw"))
    on = _generate(http, qwen_model, messages=question, enable_thinking=True)
    assert _same_prompt(on, _generate(http, qwen_model, prompt=prefix, format="raw"))
    # The template drops the thinking of earlier answers from the conversation.
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>hmm</think>\nHello!"},
        {"role": "user", "content": "Hello"},
    ]
    clean = [history[0], {"role": "assistant", "content": "Hello!"}, history[2]]
    assert _same_prompt(_generate(http, qwen_model, messages=history), _generate(http, qwen_model, messages=clean))
    # The OpenAI API takes the switch as vLLM does, in chat_template_kwargs.
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)
    answer = client.chat.completions.create(
        model=str(qwen_model),
        messages=question,
        max_tokens=6,
        temperature=1,
        seed=7,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )
    assert answer.choices[0].message.content == on["text"]
    assert answer.usage.prompt_tokens == on["usage"]["prompt_tokens"]


def test_format_chat_or_raw_and_the_default_by_model_type(
    http: httpx.Client,
    qwen_model: Path,  # noqa: F811
    base_model: Path,
) -> None:
    # An instruct model formats a prompt as a chat turn unless told `raw`.
    chat = _generate(http, qwen_model, prompt="Hello")
    assert _same_prompt(chat, _generate(http, qwen_model, prompt="Hello", format="chat"))
    assert not _same_prompt(chat, _generate(http, qwen_model, prompt="Hello", format="raw"))
    # A base model continues the text; asking it for a chat format is a 400 that says why.
    assert http.post("/api/model/load", json={"model": str(base_model)}).json()["type"] == "base"
    raw = _generate(http, base_model, prompt="Hello")
    assert _same_prompt(raw, _generate(http, base_model, prompt="Hello", format="raw"))
    refused = http.post("/api/model/generate", json={"model": str(base_model), "prompt": "Hi", "format": "chat"})
    assert refused.status_code == 400 and "no chat template" in refused.json()["error"]["message"]
