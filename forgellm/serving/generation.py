"""A generation as both APIs see it: queued on a model, read chunk by chunk, tallied, streamed.

`start` queues the job and waits for its first chunk before the response begins, so an error
in the request (a prompt longer than the context, a template that refuses the conversation)
still becomes a 4xx instead of a broken stream. `event_stream` turns a generation into a
server-sent-events body whose ``close`` (called by the WSGI server when the client leaves)
cancels the job.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response, request

from forgellm.engines.base import GenerationChunk
from forgellm.errors import ForgeError
from forgellm.security.limits import exception_body
from forgellm.serving.scheduler import ClientGone, GenerationJob, GenerationRequest, ModelWorker

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def client_disconnected() -> Callable[[], bool]:
    """Waitress tells whether the client of this request went away (with channel_request_lookahead)."""
    return request.environ.get("waitress.client_disconnected") or (lambda: False)


class Generation:
    """One request's generation: iterate for chunks, then read the tallies."""

    def __init__(
        self,
        worker: ModelWorker,
        job: GenerationJob,
        first: GenerationChunk,
        rest: Iterator[GenerationChunk],
        closer: Callable[[], None],
    ):
        self.worker = worker
        self.job = job
        self._chunks = itertools.chain([first], rest)
        self._closer = closer
        self.parts: list[str] = []
        self.last: GenerationChunk = first

    def __iter__(self) -> Iterator[GenerationChunk]:
        for chunk in self._chunks:
            self.parts.append(chunk.text)
            self.last = chunk
            yield chunk

    def close(self) -> None:
        """Cancel the job if it is still running (the client left or the body was dropped)."""
        self._closer()

    def collect(self) -> Generation:
        try:
            for _ in self:
                pass
        finally:
            self.close()
        return self

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def finish_reason(self) -> str | None:
        return self.last.finish_reason

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.last.prompt_tokens,
            "completion_tokens": self.last.completion_tokens,
            "total_tokens": self.last.prompt_tokens + self.last.completion_tokens,
        }

    def timings(self) -> dict[str, float | None]:
        """Seconds: in the queue, to the first token (engine-measured), in all (since the request was queued)."""
        return {
            "queue_seconds": round(self.job.queue_seconds, 6),
            "time_to_first_token": self.last.time_to_first_token,
            "tokens_per_second": self.last.tokens_per_second,
            "total_seconds": round(time.perf_counter() - self.job.submitted, 6),
        }


def start(worker: ModelWorker, gen_request: GenerationRequest) -> Generation:
    """Queue a generation and wait for its first chunk (raising its error, or `ClientGone`)."""
    job = worker.submit(gen_request)
    chunks = job.stream(client_disconnected())
    try:
        first = next(chunks)
    except StopIteration:  # only a cancelled job ends without a chunk
        raise ClientGone() from None
    except BaseException:
        chunks.close()
        raise
    return Generation(worker, job, first, chunks, chunks.close)


class _ClosingBody:
    """A response body whose ``close`` also runs ``on_close``, even if iteration never started
    (closing a generator that never ran skips its ``finally``)."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]):
        self._body = iter(body)
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return self._body

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


def sse(data: Any) -> bytes:
    """One server-sent event carrying ``data`` (JSON unless it is already a string)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def event_stream(generation: Generation, events: Iterator[Any]) -> Response:
    """An SSE response of ``events`` (each a JSON-able object or a ready string). An error after
    the stream began can no longer change the status: it becomes a last ``{"error": ...}`` event."""
    body = _ClosingBody((sse(event) for event in _error_as_event(events)), generation.close)
    return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)


def _error_as_event(events: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from events
    except ClientGone:
        return
    except Exception as exc:
        if not isinstance(exc, ForgeError):
            log.exception("generation failed while streaming")
        yield exception_body(exc)
