"""The SocketIO side of the security checks.

Browsers do not apply the same-origin policy to WebSockets, so every Socket.IO request gets
the checks of a state-changing request (same origin, loopback Host when bound to loopback):

* at the transport (:func:`guard_socketio_transport`): engine.io's polling handshake, its
  polls and the WebSocket upgrade are refused with 403 before engine.io sees them, and
  engine.io's own origin check is given the same rule (:func:`allowed_origin`);
* at the namespace (:func:`authorize_socketio`, first thing in the ``connect`` handler): the
  same checks again, plus the access token.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app

from forgellm.security import auth, csrf
from forgellm.security.limits import error_body


def authorize_socketio(auth_payload: dict[str, Any] | None = None) -> None:
    """Call first in the ``connect`` handler; raises ConnectionRefusedError to refuse.

    Browsers send the login cookie with the handshake; other clients pass
    ``auth={"token": ...}`` or a header.
    """
    site = current_app.extensions.get(csrf.EXTENSION)
    if site is not None:
        problem = csrf.site_problem(loopback_only=site["loopback_only"], state_changing=True)
        if problem:
            raise ConnectionRefusedError(problem)
    settings = current_app.extensions.get(auth.EXTENSION)
    if settings is not None and not auth.is_authorized(settings["token"], auth_payload):
        raise ConnectionRefusedError("unauthorized: this server requires the ForgeLLM access token")


def allowed_origin(loopback_only: bool) -> Callable[[str | None, dict[str, Any]], bool]:
    """engine.io's ``cors_allowed_origins`` callable: only this server's own origin, on an allowed Host."""

    def check(origin: str | None, environ: dict[str, Any]) -> bool:
        return _transport_problem(environ, loopback_only, origin) is None

    return check


def guard_socketio_transport(app: Flask, *, loopback_only: bool, path: str = "/socket.io") -> None:
    """Refuse engine.io requests under ``path`` from another site or to a foreign Host (403 JSON).

    Call after creating the ``SocketIO`` object: it wraps the WSGI app that routes to engine.io.
    """
    inner = app.wsgi_app

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO", "").startswith(path):
            problem = _transport_problem(
                environ, loopback_only, environ.get("HTTP_ORIGIN") or environ.get("HTTP_REFERER")
            )
            if problem:
                body = json.dumps(error_body(problem, "permission_error")).encode()
                start_response(
                    "403 FORBIDDEN", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
                )
                return [body]
        return inner(environ, start_response)

    app.wsgi_app = guarded  # type: ignore[method-assign]


def _transport_problem(environ: dict[str, Any], loopback_only: bool, sent: str | None) -> str | None:
    return csrf.cross_site_problem(
        host=environ.get("HTTP_HOST", ""),
        scheme=environ.get("wsgi.url_scheme", "http"),
        method=environ.get("REQUEST_METHOD", "GET"),
        sent=sent,
        loopback_only=loopback_only,
        state_changing=True,
    )
