"""Cross-site protection.

* A state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` (or, lacking it,
  ``Referer``) names another site is refused with 403: a page on another site cannot drive
  a ForgeLLM server through the user's browser. Requests without either header (curl, the
  OpenAI client, other ForgeLLM processes) are not cross-site requests and pass.
* A server bound to loopback answers only requests addressed to a loopback name, which
  defeats DNS rebinding (a foreign name resolved to 127.0.0.1 to get around the origin check).
* Responses may not be framed by other sites, and no CORS header is ever sent.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request

from forgellm.security.auth import is_loopback

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _forbidden(message: str) -> Response:
    response = jsonify(error={"message": message, "type": "permission_error"})
    response.status_code = 403
    return response


def _host_name(host_header: str) -> str:
    """The name part of a Host header (``[::1]:5001`` -> ``::1``, ``localhost:5002`` -> ``localhost``)."""
    if host_header.startswith("["):
        return host_header[1:host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def install_cross_site_protection(app: Flask, *, loopback_only: bool) -> None:
    """Refuse cross-site state changes; with ``loopback_only``, refuse non-loopback Host names."""

    @app.before_request
    def _check_site() -> Response | None:
        if loopback_only and not is_loopback(_host_name(request.host)):
            return _forbidden(f"this server only answers requests addressed to 127.0.0.1 or localhost, "
                              f"not {request.host!r}")
        if request.method not in STATE_CHANGING:
            return None
        sent = request.headers.get("Origin") or request.headers.get("Referer")
        if sent is None:
            return None
        own = f"{request.scheme}://{request.host}".lower()
        if _origin_of(sent) != own:
            return _forbidden(f"cross-site request refused: {request.method} from origin {sent!r} to {own}; "
                              "use the ForgeLLM page served by this server")
        return None

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.pop("Access-Control-Allow-Origin", None)
        return response
