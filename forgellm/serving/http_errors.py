"""The model server's addition to the JSON errors of `forgellm.security`.

The one mapper, shared by both apps, answers every ForgeLLM error, HTTP error and bug as
``{"error": {"message", "type", "field", "param"}}`` with its status; an error after a stream
began becomes its last event, with the same body (`forgellm.security.limits.exception_body`).
Added here: a request whose client left gets an empty 499 (nobody reads it).
"""

from __future__ import annotations

from flask import Flask, Response

from forgellm.serving.scheduler import ClientGone

# Status of a request whose client left before the answer (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


def register(app: Flask) -> None:
    @app.errorhandler(ClientGone)
    def _client_gone(_exc: ClientGone) -> Response:
        return Response(status=CLIENT_CLOSED_REQUEST)
