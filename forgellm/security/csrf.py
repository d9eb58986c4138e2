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
EXTENSION = "forgellm.csrf"


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
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def site_problem(*, loopback_only: bool, state_changing: bool) -> str | None:
    """Why the current request must be refused as cross-site, or None when it may proceed."""
    return cross_site_problem(
        host=request.host,
        scheme=request.scheme,
        method=request.method,
        sent=request.headers.get("Origin") or request.headers.get("Referer"),
        loopback_only=loopback_only,
        state_changing=state_changing,
    )


def cross_site_problem(
    *, host: str, scheme: str, method: str, sent: str | None, loopback_only: bool, state_changing: bool
) -> str | None:
    """The rule itself, on plain values (``sent``: the Origin, else the Referer, header)."""
    if loopback_only and not is_loopback(_host_name(host)):
        return f"this server only answers requests addressed to 127.0.0.1 or localhost, not {host!r}"
    if not state_changing:
        return None
    own = f"{scheme}://{host}".lower()
    if sent is not None and _origin_of(sent) != own:
        return (
            f"cross-site request refused: {method} from origin {sent!r} to {own}; "
            "use the ForgeLLM page served by this server"
        )
    return None


def install_cross_site_protection(app: Flask, *, loopback_only: bool) -> None:
    """Refuse cross-site state changes; with ``loopback_only``, refuse non-loopback Host names."""
    app.extensions[EXTENSION] = {"loopback_only": loopback_only}

    @app.before_request
    def _check_site() -> Response | None:
        problem = site_problem(loopback_only=loopback_only, state_changing=request.method in STATE_CHANGING)
        return _forbidden(problem) if problem else None

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.pop("Access-Control-Allow-Origin", None)
        return response
