"""The OpenAPI document of the web app, built from the routes themselves.

Each API view is decorated with :func:`doc`, naming its summary and the pydantic models of
its body and query; :func:`build` walks the app's URL map so no endpoint can be forgotten
(a test checks that every ``/api`` rule is described).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Flask
from pydantic import BaseModel

from forgellm import __version__

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "field": {"type": "string", "description": "the refused field, when there is one"},
            },
            "required": ["message", "type"],
        }
    },
    "required": ["error"],
}


def doc(
    summary: str,
    *,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    stream: bool = False,
    responses: dict[int, str] | None = None,
) -> Callable:
    """Describe an API view for the OpenAPI document."""

    def mark(view: Callable) -> Callable:
        view.__openapi__ = {  # type: ignore[attr-defined]  # a function attribute that build() reads
            "summary": summary,
            "body": body,
            "query": query,
            "stream": stream,
            "responses": responses or {},
        }
        return view

    return mark


def build(app: Flask) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for rule in app.url_map.iter_rules():
        meta = getattr(app.view_functions[rule.endpoint], "__openapi__", None)
        if not rule.rule.startswith("/api") or meta is None:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule, meta, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ForgeLLM web app API",
            "version": __version__,
            "description": "Training, runs, models, datasets and a proxy to the model server.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas},
    }


def _operation(rule, meta: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": meta["summary"],
        "operationId": rule.endpoint.replace(".", "_"),
        "tags": [rule.endpoint.split(".")[0]],
    }
    params = [{"name": arg, "in": "path", "required": True, "schema": {"type": "string"}} for arg in rule.arguments]
    if meta["query"] is not None:
        schema = meta["query"].model_json_schema()
        required = set(schema.get("required", []))
        params += [
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": prop,
                "description": prop.get("description", ""),
            }
            for name, prop in schema["properties"].items()
        ]
    if params:
        op["parameters"] = params
    if meta["body"] is not None:
        name = meta["body"].__name__
        schema = meta["body"].model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    ok = {"description": "success", "content": {"text/event-stream" if meta["stream"] else "application/json": {}}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op["responses"] = {
        "200": ok,
        "400": {"description": "invalid input; the body names the field", **error},
        **{str(code): {"description": text, **error} for code, text in meta["responses"].items()},
    }
    return op
