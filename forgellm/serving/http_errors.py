"""The model server's additions to the JSON errors of `forgellm.security` (which answers every
ForgeLLM error, HTTP error and bug as ``{"error": {"message", "type"}}`` with its status):

- a field error also names the field as ``error.param``, as OpenAI's API does;
- a request whose client left gets an empty 499 (nobody reads it);
- an error after a stream began becomes its last event, built by `error_payload`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify

from forgellm.errors import ForgeError
from forgellm.serving.scheduler import ClientGone
from forgellm.serving.schemas import InvalidFieldError

# Status of a request whose client left before the answer (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


def error_payload(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ForgeError):
        message, kind = str(exc), exc.kind
    else:
        message, kind = f"internal error: {type(exc).__name__} (details are in the server log)", "internal_error"
    return {"error": {"message": message, "type": kind, "param": getattr(exc, "param", None)}}


def register(app: Flask) -> None:
    @app.errorhandler(InvalidFieldError)
    def _invalid_field(exc: InvalidFieldError) -> tuple[Response, int]:
        return jsonify(error_payload(exc)), exc.status

    @app.errorhandler(ClientGone)
    def _client_gone(_exc: ClientGone) -> Response:
        return Response(status=CLIENT_CLOSED_REQUEST)
