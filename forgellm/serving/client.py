"""A small Python client of the model server's reference API, for your own scripts (the CLI loads
models in-process and the web app proxies raw streams with httpx, so neither uses it).

    with ServerClient("http://127.0.0.1:5001") as server:
        server.load("default")
        for event in server.generate_stream(prompt="What is the capital of France?", max_tokens=32):
            if event["type"] == "token":
                print(event["text"], end="", flush=True)

The server's JSON errors come back as the ForgeLLM errors they started as (400 `UserError`,
404 `NotFoundError`, 409 `ConflictError`...); a server that cannot be reached is a
`ServerUnreachableError` saying how to start one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from forgellm.errors import AccessError, ConflictError, ForgeError, NotFoundError, UserError
from forgellm.security import client_headers

DEFAULT_URL = "http://127.0.0.1:5001"

_ERRORS_BY_STATUS: dict[int, type[ForgeError]] = {
    400: UserError,
    401: AccessError,
    403: AccessError,
    404: NotFoundError,
    409: ConflictError,
    413: UserError,
}

_STATUS_BY_KIND = {
    "invalid_request_error": 400,
    "not_found_error": 404,
    "conflict_error": 409,
    "insufficient_memory": 409,
}


class ServerUnreachableError(UserError):
    status = 503
    kind = "server_unavailable"


class ServerError(ForgeError):
    """The server failed (5xx): its message, which points to its log."""


class ServerClient:
    """Talks to one model server. Generation has no read timeout: answers may take minutes."""

    def __init__(self, base_url: str = DEFAULT_URL, *, token: str | None = None, connect_timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, headers=client_headers(token), timeout=httpx.Timeout(connect_timeout, read=None)
        )

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -------------------------------------------------------------- reference API

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/api/health")

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/api/model/status")

    def load(self, model: str, adapter: str | None = None, engine: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/api/model/load", _without_none(model=model, adapter=adapter, engine=engine))

    def unload(self, model: str | None = None, *, everything: bool = False) -> dict[str, Any]:
        return self._call("POST", "/api/model/unload", _without_none(model=model, all=everything or None))

    def generate(self, **fields: Any) -> dict[str, Any]:
        """One whole answer. ``fields`` are those of ``POST /api/model/generate`` (prompt or messages,
        max_tokens, temperature, ...)."""
        return self._call("POST", "/api/model/generate", _without_none(**fields, stream=False))

    def generate_stream(self, **fields: Any) -> Iterator[dict[str, Any]]:
        """The answer as events: ``{"type": "token", "text", ...}`` then ``{"type": "done", ...}``.
        Closing the iterator (or leaving the loop) disconnects, which stops the generation."""
        body = _without_none(**fields, stream=True)
        try:
            with self._http.stream("POST", "/api/model/generate", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[5:])
                    if "error" in event:  # failed after the stream began
                        kind = event["error"].get("type", "") if isinstance(event["error"], dict) else ""
                        raise _error_from_payload(event, _STATUS_BY_KIND.get(kind, 500))
                    yield event
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    # -------------------------------------------------------------- plumbing

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response.json()

    def _unreachable(self, exc: Exception) -> ServerUnreachableError:
        return ServerUnreachableError(
            f"the model server at {self.base_url} is not reachable "
            f"({type(exc).__name__}): start it with `forgellm server` (or `forgellm start`)"
        )


def _without_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _error_from(response: httpx.Response) -> ForgeError:
    try:
        payload = response.json()
    except ValueError:
        payload = {"error": {"message": response.text[:500] or response.reason_phrase}}
    return _error_from_payload(payload, response.status_code)


def _error_from_payload(payload: Any, status: int) -> ForgeError:
    error = payload.get("error") if isinstance(payload, dict) else None
    message = error.get("message") if isinstance(error, dict) else str(payload)
    cls = _ERRORS_BY_STATUS.get(status, ServerError if status >= 500 else UserError)
    return cls(f"model server: {message}")
