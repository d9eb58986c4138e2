"""``/api/model/*``: passed to the model server (``--server-url``), streams included.

Bodies are checked against the model server's own request schemas (the web app's OpenAPI
document shows the same ones), then forwarded unchanged; the model server's answer (status,
JSON error, server-sent events) comes back as it is. A stream the model server cuts (it died
mid-answer) ends with an ``error`` event of type ``server_unavailable``, so a client never
mistakes a cut answer for a finished one.
"""

from __future__ import annotations

from typing import Any

import httpx
from flask import Blueprint, Response, current_app, jsonify, stream_with_context
from pydantic import BaseModel

from forgellm.errors import ForgeError
from forgellm.security import client_headers
from forgellm.serving.generation import sse
from forgellm.serving.schemas import GenerateRequest, LoadRequest, UnloadRequest
from forgellm.web import context, openapi
from forgellm.web.validation import json_body, validate

bp = Blueprint("proxy", __name__)

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


class ServerUnavailable(ForgeError):
    status = 503
    kind = "server_unavailable"


def forward(method: str, path: str, payload: Any = None) -> Response:
    """Send the request to the model server and relay its answer, streaming the body."""
    url = context.server_url()
    client = httpx.Client(
        base_url=url, timeout=httpx.Timeout(10.0, read=None), headers=client_headers(current_app.config["ACCESS_TOKEN"])
    )
    try:
        upstream = client.send(client.build_request(method, path, json=payload), stream=True)
    except httpx.HTTPError as exc:
        client.close()
        raise ServerUnavailable(
            f"the model server at {url} is not reachable ({type(exc).__name__}); "
            "start it with `forgellm server` or run `forgellm start`"
        ) from None

    streaming = upstream.headers.get("content-type", "").startswith("text/event-stream")

    def relay():
        try:
            yield from upstream.iter_raw()
        except httpx.HTTPError as exc:
            if streaming:
                yield cut_stream_event(url, exc)
            # else: a cut JSON body; the client's JSON parser reports it
        finally:
            upstream.close()
            client.close()

    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
    headers["X-Accel-Buffering"] = "no"
    return Response(stream_with_context(relay()), status=upstream.status_code, headers=headers)


def cut_stream_event(url: str, exc: Exception) -> bytes:
    """The last event of a stream the model server cut: an error the Testing tab (and any client) shows."""
    message = (
        f"the model server at {url} stopped in the middle of the answer ({type(exc).__name__}); "
        "under `forgellm start` it is restarted and loads its model again"
    )
    # A blank line first ends an event the server may have been cut in the middle of.
    return b"\n\n" + sse(
        {"type": "error", "error": {"message": message, "type": ServerUnavailable.kind, "field": None}}
    )


def forward_checked(schema: type[BaseModel], path: str) -> Response:
    """POST the JSON body to the model server once it passes ``schema`` (a 400 naming the field if not)."""
    data = json_body()
    validate(schema, data)
    return forward("POST", path, data)


@bp.post("/api/model/load")
@openapi.doc(
    "Load a model (and adapter) in the model server",
    body=LoadRequest,
    responses={404: "unknown model", 503: "model server not reachable"},
)
def load():
    return forward_checked(LoadRequest, "/api/model/load")


@bp.post("/api/model/unload")
@openapi.doc(
    "Unload the model server's current model (or a named one, or all)",
    body=UnloadRequest,
    responses={503: "model server not reachable"},
)
def unload():
    return forward_checked(UnloadRequest, "/api/model/unload")


@bp.get("/api/model/status")
@openapi.doc(
    "The model server's status: model, adapter, engine, memory, busy", responses={503: "model server not reachable"}
)
def status():
    return forward("GET", "/api/model/status")


@bp.post("/api/model/generate")
@openapi.doc(
    "Generate with the loaded model, or a named model and adapter (side by side); stream=true "
    "answers server-sent events",
    body=GenerateRequest,
    stream=True,
    responses={409: "no model loaded", 503: "model server not reachable"},
)
def generate():
    return forward_checked(GenerateRequest, "/api/model/generate")


@bp.get("/api/server/status")
@openapi.doc("Whether the model server is up (checked now)")
def server_status():
    return jsonify(context.server_watch().check())
