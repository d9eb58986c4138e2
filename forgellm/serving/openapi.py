"""The server's OpenAPI 3.1 document, built from the pydantic request models in `schemas`.

Served at ``/api/openapi.json`` so tools (Schemathesis, client generators) see exactly the
rules the server enforces.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from forgellm import __version__
from forgellm.serving.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    GenerateRequest,
    LoadRequest,
    UnloadRequest,
)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_JSON = "application/json"
_SSE = "text/event-stream"
_ERRORS = {
    400: "Malformed JSON, or a field missing, of the wrong type or out of range (`param` names it)",
    404: "Unknown model, adapter or route",
    409: "No model loaded, or the model was unloaded meanwhile",
    413: "The body is larger than the server accepts",
}

# (method, path, summary, request model or None, whether the body is optional, errors, answers as)
_OPERATIONS: list[tuple[str, str, str, type[BaseModel] | None, bool, tuple[int, ...], tuple[str, ...]]] = [
    ("get", "/api/health", "Liveness and version", None, False, (), (_JSON,)),
    (
        "post",
        "/api/model/load",
        "Load a model (and adapter) and make it current",
        LoadRequest,
        False,
        (400, 404, 409, 413),
        (_JSON,),
    ),
    (
        "post",
        "/api/model/unload",
        "Unload the current model, a cached one, or all",
        UnloadRequest,
        True,
        (400, 404, 409, 413),
        (_JSON,),
    ),
    ("get", "/api/model/status", "The current model, the cache and the memory in use", None, False, (), (_JSON,)),
    (
        "post",
        "/api/model/generate",
        "Generate with the current model (or a named one)",
        GenerateRequest,
        False,
        (400, 404, 409, 413),
        (_JSON, _SSE),
    ),
    ("get", "/v1/models", "OpenAI: list models", None, False, (), (_JSON,)),
    (
        "post",
        "/v1/chat/completions",
        "OpenAI: chat completion",
        ChatCompletionRequest,
        False,
        (400, 404, 409, 413),
        (_JSON, _SSE),
    ),
    (
        "post",
        "/v1/completions",
        "OpenAI: text completion",
        CompletionRequest,
        False,
        (400, 404, 409, 413),
        (_JSON, _SSE),
    ),
    ("get", "/api/openapi.json", "This document", None, False, (), (_JSON,)),
]


def build_openapi() -> dict[str, Any]:
    models = [m for *_, m, _, _, _ in _OPERATIONS if m is not None] + [ErrorResponse]
    mode: Literal["validation"] = "validation"
    refs, schema = models_json_schema([(m, mode) for m in models], ref_template="#/components/schemas/{model}")
    paths: dict[str, Any] = {}
    for method, path, summary, body, optional, errors, media in _OPERATIONS:
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method}_{path.strip('/').replace('/', '_')}",
            "responses": {"200": {"description": "OK", "content": {m: {"schema": {}} for m in media}}},
        }
        if body is not None:
            op["requestBody"] = {"required": not optional, "content": {_JSON: {"schema": refs[(body, mode)]}}}
        for status in errors:
            op["responses"][str(status)] = {
                "description": _ERRORS[status],
                "content": {_JSON: {"schema": refs[(ErrorResponse, mode)]}},
            }
        paths.setdefault(path, {})[method] = op
    paths["/v1/models/{model_id}"] = {
        "get": {
            "summary": "OpenAI: one model",
            "operationId": "get_v1_model",
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "OK", "content": {_JSON: {"schema": {}}}},
                "404": {"description": _ERRORS[404], "content": {_JSON: {"schema": refs[(ErrorResponse, mode)]}}},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ForgeLLM model server",
            "version": __version__,
            "description": "Reference API (/api) and OpenAI-compatible API (/v1). See docs/server.md.",
        },
        "paths": paths,
        "components": {"schemas": schema.get("$defs", {})},
    }
