"""The OpenAI-compatible API, driven by the official ``openai`` client, unchanged."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.server_helpers import http, other_tiny_model_dir, server, sse_events, stop_string_in  # noqa: F401 (fixtures)


@pytest.fixture
def client(server) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=120)


def test_models_list_shows_loaded_and_workspace_models(
    client: openai.OpenAI,
    http: httpx.Client,  # noqa: F811
    tiny_model_dir: Path,
) -> None:
    http.post("/api/model/load", json={"model": str(tiny_model_dir)}).raise_for_status()
    ids = [m.id for m in client.models.list()]
    assert ids[0] == tiny_model_dir.name
    assert client.models.retrieve(tiny_model_dir.name).id == tiny_model_dir.name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_completion_whole_and_streamed(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    params = dict(
        model=str(tiny_model_dir),
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=6,
        temperature=1.0,
        seed=11,
    )
    whole = client.chat.completions.create(**params)
    choice = whole.choices[0]
    assert whole.object == "chat.completion" and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length" and whole.usage.completion_tokens == 6
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 6

    chunks = list(client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content  # same seed: same answer
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert len({c.id for c in chunks}) == 1


def test_text_completion_whole_streamed_and_echo(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    params = dict(model=str(tiny_model_dir), prompt="Once upon a time", max_tokens=5, temperature=1.0, seed=2)
    whole = client.completions.create(**params)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 5 and whole.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(**params, stream=True))
    assert streamed == whole.choices[0].text
    echoed = client.completions.create(**params, echo=True)
    assert echoed.choices[0].text == "Once upon a time" + whole.choices[0].text


def test_stop_sequence_gives_stop_reason(client: openai.OpenAI, tiny_model_dir: Path) -> None:
    params = dict(model=str(tiny_model_dir), prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=4)
    text = client.completions.create(**params).choices[0].text
    stop = stop_string_in(text)
    cut = client.completions.create(**params, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.text == text[: text.index(stop)]


def test_model_is_loaded_on_demand_and_errors_are_typed(
    client: openai.OpenAI,
    http: httpx.Client,  # noqa: F811
    other_tiny_model_dir: Path,
) -> None:
    http.post("/api/model/unload", json={"all": True}).raise_for_status()
    answer = client.chat.completions.create(
        model=str(other_tiny_model_dir), max_tokens=2, messages=[{"role": "user", "content": "Hi"}]
    )
    assert answer.usage.completion_tokens == 2
    assert other_tiny_model_dir.name in [m["id"] for m in http.get("/api/model/status").json()["cache"]]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    assert "no-such-model" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=str(other_tiny_model_dir), temperature=3.5, messages=[{"role": "user", "content": "Hi"}]
        )
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError, match="n"):
        client.chat.completions.create(
            model=str(other_tiny_model_dir), n=2, messages=[{"role": "user", "content": "Hi"}]
        )


def test_text_parts_and_developer_role(http: httpx.Client, tiny_model_dir: Path) -> None:  # noqa: F811
    body = {
        "model": str(tiny_model_dir),
        "max_tokens": 3,
        "temperature": 0,
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]},
        ],
    }
    parts = http.post("/v1/chat/completions", json=body).json()
    plain = http.post(
        "/v1/chat/completions",
        json={**body, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]},
    ).json()
    assert parts["usage"] == plain["usage"] and parts["choices"][0]["message"] == plain["choices"][0]["message"]
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        events = list(sse_events(response))
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "length"
