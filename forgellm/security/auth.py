"""The access-token policy.

Loopback binds (127.0.0.0/8, ::1, localhost) need no token. Any other address requires one,
from ``--token``/``FORGELLM_TOKEN`` or generated at start; without it the server refuses to
start. With a token, every HTTP endpoint requires it, as ``Authorization: Bearer <token>``,
``X-ForgeLLM-Token: <token>`` or the cookie the ``/login`` page sets; SocketIO connections
check the same through :func:`forgellm.security.sockets.authorize_socketio`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from html import escape
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, jsonify, make_response, redirect, request
from werkzeug.wrappers import Response  # what redirect() returns; flask.Response is a subclass

from forgellm.errors import UserError

TOKEN_ENV = "FORGELLM_TOKEN"
TOKEN_HEADER = "X-ForgeLLM-Token"
COOKIE_NAME = "forgellm_auth"
LOGIN_PATH = "/login"
MIN_TOKEN_LENGTH = 16
EXTENSION = "forgellm.auth"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses; any other name or address is not."""
    host = host.strip().strip("[]").lower()
    if host in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def generate_token() -> str:
    """A fresh 256-bit token, URL-safe."""
    return secrets.token_urlsafe(32)


def bind_policy(host: str, token: str | None) -> str | None:
    """The token a server bound to ``host`` must require, or None when it may run open.

    Raises UserError when a non-loopback address has no token, or the token is too short
    to resist guessing.
    """
    token = token.strip() if token else None
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise UserError(
            f"the access token has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
            "(e.g. --generate-token, or `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    if token or is_loopback(host):
        return token or None
    raise UserError(
        f"refusing to listen on {host}: any address other than 127.0.0.1/localhost is reachable from other "
        f"machines, so it needs an access token. Set {TOKEN_ENV}=<token> or pass --token <token>, or pass "
        "--generate-token to have one generated and printed; or bind to 127.0.0.1 (the default)."
    )


def client_headers(token: str | None) -> dict[str, str]:
    """Headers a ForgeLLM process sends to another (e.g. web app -> model server)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _cookie_value(token: str) -> str:
    # The cookie carries a digest, not the token itself, so it cannot be replayed as a header.
    return hmac.new(token.encode(), b"forgellm-login-cookie", hashlib.sha256).hexdigest()


def _presented_token() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get(TOKEN_HEADER) or None


def is_authorized(token: str | None, auth: dict[str, Any] | None = None) -> bool:
    """Whether the current request (or SocketIO ``auth`` payload) carries ``token``; constant-time."""
    if not token:
        return True
    offered = _presented_token()
    if offered is None and isinstance(auth, dict) and isinstance(auth.get("token"), str):
        offered = auth["token"]
    if offered is not None and hmac.compare_digest(offered.encode(), token.encode()):
        return True
    cookie = request.cookies.get(COOKIE_NAME)
    return cookie is not None and hmac.compare_digest(cookie.encode(), _cookie_value(token).encode())


def protect(app: Flask, token: str | None) -> None:
    """Require ``token`` on every endpoint of ``app`` (no-op without a token); adds ``/login``."""
    app.extensions[EXTENSION] = {"token": token}
    if not token:
        return

    @app.before_request
    def _require_token() -> Response | None:
        if request.path == LOGIN_PATH or is_authorized(token):
            return None
        if request.method == "GET" and request.accept_mimetypes.best in ("text/html", "application/xhtml+xml"):
            # A person in a browser: send them to the login form rather than a JSON error.
            return redirect(f"{LOGIN_PATH}?next={request.full_path.rstrip('?')}")
        response = jsonify(
            error={
                "message": f"this server requires an access token: send 'Authorization: Bearer "
                f"<token>' or '{TOKEN_HEADER}: <token>', or log in at {LOGIN_PATH}",
                "type": "authentication_error",
            }
        )
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="forgellm"'
        return response

    @app.route(LOGIN_PATH, methods=["GET", "POST"], endpoint="forgellm_login")
    def _login() -> Response:
        target = _local_target(request.values.get("next", "/"))
        offered = request.form.get("token") if request.method == "POST" else request.args.get("token")
        if offered is None:
            return _login_page(target, error=None, status=200)
        if not hmac.compare_digest(offered.strip().encode(), token.encode()):
            return _login_page(target, error="wrong token", status=401)
        response = redirect(target)
        response.set_cookie(
            COOKIE_NAME, _cookie_value(token), httponly=True, samesite="Strict", secure=request.is_secure, path="/"
        )
        return response


def _local_target(target: str) -> str:
    """Only same-site paths after login: never an open redirect to another host."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(target: str, *, error: str | None, status: int) -> Response:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ForgeLLM: log in</title>
<style>body{{font-family:sans-serif;max-width:28em;margin:4em auto}}input{{width:100%;padding:.4em}}
.error{{color:#b00}}</style></head>
<body><h1>ForgeLLM</h1><p>This server requires its access token (printed at start, or FORGELLM_TOKEN).</p>
{message}<form method="post" action="{LOGIN_PATH}">
<input type="hidden" name="next" value="{escape(target)}">
<label>Access token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<p><button type="submit">Log in</button></p></form></body></html>"""
    response = make_response(html, status)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    return response
