"""Request-size limit and the one JSON error mapper of both apps: no input ever gets an HTML
error page or a traceback.

Every error leaves as ``{"error": {"message", "type", "field", "param"}}`` with the right
status: ForgeLLM errors with their own status (4xx), HTTP errors (404, 405, 413...) with
theirs, and an unexpected exception as a 500 that names the request id to look up in the
logs. ``field`` names the input at fault (null when none); ``param`` repeats it under the
name OpenAI's API uses, so OpenAI clients show it too.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from forgellm.errors import ForgeError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

_HTTP_KINDS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def error_body(message: str, kind: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "field": field, "param": field}}


def exception_body(exc: BaseException) -> dict[str, Any]:
    """The JSON body for ``exc``: a ForgeError as it words itself, anything else as an internal error."""
    if isinstance(exc, ForgeError):
        return error_body(str(exc), exc.kind, exc.field)
    return error_body(f"internal error: {type(exc).__name__} (details are in the server log)", "internal_error")


def error_response(message: str, kind: str, status: int, field: str | None = None) -> Response:
    response = jsonify(error_body(message, kind, field))
    response.status_code = status
    return response


def install_limits(app: Flask, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """Refuse bodies above ``max_body_bytes`` with 413 and turn every error into JSON."""
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes

    def too_large() -> Response:
        return error_response(
            f"the request body is larger than the limit of {max_body_bytes} bytes; "
            "send less data (upload large datasets into the workspace's dataset/ folder)",
            "request_too_large",
            413,
        )

    @app.before_request
    def _check_length() -> Response | None:
        # Refuse on the declared length before reading anything.
        if request.content_length is not None:
            return too_large() if request.content_length > max_body_bytes else None
        if not request.environ.get("wsgi.input_terminated"):
            return None  # no length and no terminated stream: Werkzeug reads no body at all
        # A chunked body has no length; Werkzeug would silently cut it at the limit, so
        # buffer up to one byte past the limit and hand the app an ordinary sized body.
        body = request.environ["wsgi.input"].read(max_body_bytes + 1)
        if len(body) > max_body_bytes:
            return too_large()
        request.environ["wsgi.input"] = io.BytesIO(body)
        request.environ["CONTENT_LENGTH"] = str(len(body))
        return None

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_exc: RequestEntityTooLarge) -> Response:
        return too_large()

    @app.errorhandler(ForgeError)
    def _forge_error(exc: ForgeError) -> Response:
        if exc.status >= 500:
            logger.error("server error: %s", exc, exc_info=exc)
        response = error_response(str(exc), exc.kind, exc.status, exc.field)
        if exc.retry_after_s is not None:
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        kind = _HTTP_KINDS.get(status, "invalid_request_error" if status < 500 else "internal_error")
        response = error_response(exc.description or exc.name, kind, status)
        for header, value in exc.get_response().headers.items():
            if header in ("Allow", "Retry-After", "WWW-Authenticate"):
                response.headers[header] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        request_id = getattr(g, "request_id", None)
        logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        where = (
            f" (request id {request_id}; details are in the server log)"
            if request_id
            else " (details are in the server log)"
        )
        return error_response(f"internal error: {exc.__class__.__name__}{where}", "internal_error", 500)
