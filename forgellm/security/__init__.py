"""Safe defaults for every ForgeLLM HTTP server, applied by one call.

``install_security(app, host=..., token=..., max_body_bytes=...)`` gives a Flask app:

* **access token** (:mod:`.auth`): loopback binds may run open; any other address needs a
  token or the call raises UserError. With a token, every endpoint answers 401 JSON unless the
  request carries ``Authorization: Bearer <token>``, ``X-ForgeLLM-Token: <token>`` or the
  cookie set by the ``/login`` page. SocketIO ``connect`` handlers call
  :func:`authorize_socketio` first (:mod:`.sockets`: token, same origin, loopback Host).
* **cross-site protection** (:mod:`.csrf`): POST/PUT/PATCH/DELETE from another origin get 403;
  a loopback-bound server refuses foreign Host names (DNS rebinding); no CORS, no framing.
* **limits and JSON errors** (:mod:`.limits`): bodies above ``max_body_bytes`` get 413; every
  error, expected or not, is ``{"error": {"message", "type", "field", "param"}}``, never an
  HTML page.
* **request parsing** (:mod:`.requests`): JSON nested deeper than ``MAX_JSON_DEPTH`` is a 400;
  request schemas are validated with the app's :class:`~forgellm.access.Roots`, so every path
  or name in a request follows the one confinement rule of :mod:`forgellm.access`.
* **request logging** (:mod:`.logs`): a request id per request (``X-Request-Id``), one JSON
  line per request, secrets redacted. Call :func:`configure_logging` once per process to
  write ``<workspace>/logs/<name>.log``.

Deletions from a request go through :func:`safe_delete` (:mod:`.files`).
"""

from __future__ import annotations

from flask import Flask

from forgellm.access import Roots
from forgellm.security.auth import TOKEN_ENV, bind_policy, client_headers, generate_token, is_loopback, protect
from forgellm.security.csrf import install_cross_site_protection
from forgellm.security.files import safe_delete
from forgellm.security.limits import DEFAULT_MAX_BODY_BYTES, install_limits
from forgellm.security.logs import configure_logging, install_request_logging, redact, register_secret
from forgellm.security.requests import ROOTS_EXTENSION
from forgellm.security.sockets import authorize_socketio, guard_socketio_transport
from forgellm.workspace import Workspace

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "TOKEN_ENV",
    "authorize_socketio",
    "bind_policy",
    "client_headers",
    "configure_logging",
    "generate_token",
    "guard_socketio_transport",
    "install_security",
    "is_loopback",
    "redact",
    "register_secret",
    "safe_delete",
]


def install_security(
    app: Flask,
    *,
    host: str,
    token: str | None,
    roots: Roots | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Flask:
    """Apply the bind policy, token, cross-site checks, body limit, JSON errors and request logs.

    ``host`` is the address the server listens on. Raises UserError when it is not loopback
    and there is no token. ``roots`` are the folders requests may reach (default: those of the
    current workspace and ``$FORGELLM_ROOTS``). Returns ``app``.
    """
    app.extensions[ROOTS_EXTENSION] = roots or Roots.of(Workspace.current())
    token = bind_policy(host, token)
    register_secret(token)
    # Order matters: the request id exists before anything can refuse the request.
    install_request_logging(app)
    install_cross_site_protection(app, loopback_only=is_loopback(host))
    install_limits(app, max_body_bytes=max_body_bytes)
    protect(app, token)
    return app
