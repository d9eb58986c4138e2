"""The OpenAI-compatible API: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``.

The shapes follow OpenAI's API reference closely enough that the official ``openai`` client
and chat front-ends work unchanged. ``model`` names a cached model or anything that resolves
(a model, an adapter, a training run); it is loaded on demand into the cache. Chat requests
use the model's chat template (raw text for base models); completions are raw continuations.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, request

from forgellm.errors import NotFoundError
from forgellm.models.resolve import list_models
from forgellm.security.requests import request_roots
from forgellm.serving import generation
from forgellm.serving.api_reference import registry
from forgellm.serving.scheduler import GenerationRequest
from forgellm.serving.schemas import ChatCompletionRequest, CompletionRequest, parse_body

bp = Blueprint("openai", __name__, url_prefix="/v1")


@bp.get("/models")
def models() -> Response:
    return jsonify({"object": "list", "data": _model_cards()})


@bp.get("/models/<path:model_id>")
def model(model_id: str) -> Response:
    for card in _model_cards():
        if card["id"] == model_id:
            return jsonify(card)
    raise NotFoundError(f"model {model_id!r} not found: GET /v1/models lists the models this server can load")


@bp.post("/chat/completions")
def chat_completions() -> Response:
    body = parse_body(request.get_data(), ChatCompletionRequest)
    run = generation.start(
        registry().get(body.model, roots=request_roots()),
        GenerationRequest(
            prompt=[m.as_turn() for m in body.messages],
            params=body.sampling_params(),
            enable_thinking=body.enable_thinking,
        ),
    )
    reply = _Reply("chatcmpl", "chat.completion", body.model)
    if body.stream:
        return generation.event_stream(run, _chat_events(run, reply, body.include_usage))
    run.collect()
    return jsonify(
        reply.envelope(
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": run.text},
                    "finish_reason": run.finish_reason,
                    "logprobs": None,
                }
            ],
            usage=run.usage(),
        )
    )


@bp.post("/completions")
def completions() -> Response:
    body = parse_body(request.get_data(), CompletionRequest)
    run = generation.start(
        registry().get(body.model, roots=request_roots()),
        GenerationRequest(prompt=body.prompt_text, params=body.sampling_params(), fmt="raw"),
    )
    reply = _Reply("cmpl", "text_completion", body.model)
    echo = body.prompt_text if body.echo else ""
    if body.stream:
        return generation.event_stream(run, _completion_events(run, reply, echo, body.include_usage))
    run.collect()
    return jsonify(
        reply.envelope(
            choices=[{"index": 0, "text": echo + run.text, "finish_reason": run.finish_reason, "logprobs": None}],
            usage=run.usage(),
        )
    )


class _Reply:
    """The id, object type, creation time and model shared by every chunk of one answer."""

    def __init__(self, prefix: str, kind: str, model_name: str):
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.kind = kind
        self.model = model_name
        self.created = int(time.time())

    def envelope(
        self, *, choices: list[dict[str, Any]], usage: dict[str, int] | None = None, kind: str | None = None
    ) -> dict[str, Any]:
        out = {
            "id": self.id,
            "object": kind or self.kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if usage is not None:
            out["usage"] = usage
        return out


def _chat_events(run: generation.Generation, reply: _Reply, include_usage: bool) -> Iterator[Any]:
    def chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
        return reply.envelope(
            kind="chat.completion.chunk",
            choices=[{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        )

    yield chunk({"role": "assistant", "content": ""})
    for piece in run:
        if piece.text:
            yield chunk({"content": piece.text})
    yield chunk({}, run.finish_reason)
    yield from _usage_and_done(run, reply, include_usage, "chat.completion.chunk")


def _completion_events(run: generation.Generation, reply: _Reply, echo: str, include_usage: bool) -> Iterator[Any]:
    def chunk(text: str, finish_reason: str | None = None) -> dict[str, Any]:
        return reply.envelope(choices=[{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}])

    if echo:
        yield chunk(echo)
    for piece in run:
        if piece.text:
            yield chunk(piece.text)
    yield chunk("", run.finish_reason)
    yield from _usage_and_done(run, reply, include_usage, "text_completion")


def _usage_and_done(run: generation.Generation, reply: _Reply, include_usage: bool, kind: str) -> Iterator[Any]:
    if include_usage:  # OpenAI sends usage in one last chunk without choices, when asked
        yield reply.envelope(kind=kind, choices=[], usage=run.usage())
    yield "[DONE]"


def _model_cards() -> list[dict[str, Any]]:
    """The cached models first (most recent first), then every model and adapter in the workspace."""
    cards: dict[str, dict[str, Any]] = {}
    for worker in registry().cached():
        cards[worker.name] = {
            "id": worker.name,
            "object": "model",
            "created": int(worker.loaded_at or time.time()),
            "owned_by": "forgellm",
            "loaded": worker.ready,
        }
    for info in list_models(registry().workspace):
        cards.setdefault(
            info.name,
            {"id": info.name, "object": "model", "created": _mtime(info.path), "owned_by": "forgellm", "loaded": False},
        )
    return list(cards.values())


def _mtime(path: Any) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0
