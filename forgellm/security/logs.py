"""Structured logs: one JSON object per line under ``<workspace>/logs/``, rotated, secrets redacted.

Each line carries ``time``, ``level``, ``logger``, ``message``, the ``request_id`` of the
HTTP request being served, plus any ``extra=`` fields. Tokens, passwords and API keys are replaced by ``[REDACTED]`` before a
line is written, in the files and on the console alike.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, has_request_context, request

from forgellm.workspace import Workspace

REDACTED = "[REDACTED]"
REQUEST_ID_HEADER = "X-Request-Id"
MAX_LOG_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 5

_secrets: set[str] = set()
_SECRET_PATTERNS = [
    re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+"),
    re.compile(r"(?i)(\b[\w-]*(?:token|api[_-]?key|secret|password|passwd)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;}]+"),
    re.compile(r"()\bhf_[A-Za-z0-9]{20,}"),
    re.compile(r"()\bsk-[A-Za-z0-9_-]{16,}"),
]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def register_secret(value: str | None) -> None:
    """Never write ``value`` to a log, whatever the context it appears in."""
    if value:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with secrets redacted (for handlers that are not JSON)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or _current_request_id(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=lambda v: redact(str(v)), ensure_ascii=False)


def _current_request_id() -> str | None:
    return getattr(g, "request_id", None) if has_request_context() else None


def configure_logging(name: str, workspace: Workspace | None = None, *, level: int = logging.INFO) -> Path:
    """Send this process's logs to ``<workspace>/logs/<name>.log`` (JSON lines, rotated).

    Calling it again with the same name replaces the earlier file handler. The console
    keeps the verbosity it had, and gets the redaction filter too.
    """
    workspace = workspace or Workspace.current()
    workspace.logs_dir.mkdir(parents=True, exist_ok=True)
    path = workspace.logs_dir / f"{name}.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "forgellm_log", None) == name:
            root.removeHandler(handler)
            handler.close()
    console_level = root.level
    for handler in root.handlers:
        if handler.level == logging.NOTSET:
            handler.setLevel(console_level)
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    file_handler.forgellm_log = name  # type: ignore[attr-defined]
    file_handler.setLevel(level)
    file_handler.setFormatter(JsonFormatter())
    root.addHandler(file_handler)
    if console_level > level:
        root.setLevel(level)
    return path


# Read-only status reads the web app repeats every few seconds: logged at debug, or they
# would bury every other line of the console and the log file.
STATUS_POLL_PATHS = frozenset({"/api/health", "/api/model/status"})


def _is_status_poll(response: Response) -> bool:
    return request.method == "GET" and request.path in STATUS_POLL_PATHS and response.status_code < 400


def install_request_logging(app: Flask) -> None:
    """Give every request an id (kept from ``X-Request-Id`` when sane), echo it, log one line per request."""
    access = logging.getLogger("forgellm.http")

    @app.before_request
    def _start() -> None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex[:16]
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = getattr(g, "request_id", None)
        if request_id:
            response.headers[REQUEST_ID_HEADER] = request_id
        started = getattr(g, "request_started", None)
        level = logging.DEBUG if _is_status_poll(response) else logging.INFO
        access.log(
            level,
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
                "remote_addr": request.remote_addr,
            },
        )
        return response
