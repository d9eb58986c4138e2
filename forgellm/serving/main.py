"""Run the model server on waitress, a production WSGI server with a thread pool.

Waitress settings that matter here:

- ``send_bytes`` is left at its default of 1 (the setting is deprecated): each piece the app
  yields is flushed at once, so server-sent events reach the client token by token, not in
  buffered batches (checked by tests/test_server_stream.py, which times the events).
- ``channel_request_lookahead=1``: waitress keeps reading the socket while a request runs,
  so it notices a client that hangs up and ``environ["waitress.client_disconnected"]()``
  turns true; the generation is then cancelled even before the next token is written.
  (A write to a closed socket also ends the response: waitress then closes the app iterator.)
- ``threads``: requests wait on their model's queue in these threads, so there are enough
  for many clients to queue while one generates.
- health and status have a lane of their own (:class:`StatusLane`, ``STATUS_THREADS`` more
  threads): when every thread holds a generation, ``GET /api/health`` and
  ``GET /api/model/status`` still answer at once instead of queueing behind them.
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass
from typing import Any

from flask import Flask

from forgellm.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
DEFAULT_THREADS = 16
STATUS_THREADS = 2
STATUS_PATHS = frozenset({"/api/health", "/api/model/status"})


@dataclass
class ServerOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    threads: int = DEFAULT_THREADS


def create_server(app: Flask, options: ServerOptions) -> Any:
    """A bound (listening) waitress server; `UserError` naming the port if it is taken.

    ``port=0`` picks a free port: read it back from ``server.effective_port``.
    """
    from waitress.server import create_server as waitress_server

    try:
        server = waitress_server(
            app,
            host=options.host,
            port=options.port,
            threads=options.threads,
            channel_request_lookahead=1,
            ident="forgellm",
            clear_untrusted_proxy_headers=True,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {options.port} on {options.host} is already in use (another server?): "
                f"stop it or choose another port with --port"
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise UserError(
                f"cannot listen on {options.host}:{options.port} ({exc.strerror}): check --host and --port"
            ) from None
        raise
    server.task_dispatcher = StatusLane(server.task_dispatcher)
    return server


class StatusLane:
    """Waitress's task dispatcher plus a second one, with its own threads, for status requests.

    Waitress parses a request in its event loop and then queues the connection (the task) for
    a worker thread; the path is known by then, so status requests can skip the queue that
    generations fill. Everything else goes to waitress's own dispatcher, unchanged.
    """

    def __init__(self, general: Any, threads: int = STATUS_THREADS):
        from waitress.task import ThreadedTaskDispatcher

        self.general = general
        self.status = ThreadedTaskDispatcher()
        self.status.set_thread_count(threads)

    def add_task(self, task: Any) -> None:
        (self.status if _is_status_request(task) else self.general).add_task(task)

    def set_thread_count(self, count: int) -> None:
        self.general.set_thread_count(count)

    def shutdown(self, cancel_pending: bool = True, timeout: int = 5) -> bool:
        self.status.shutdown(cancel_pending, timeout)
        return self.general.shutdown(cancel_pending, timeout)


def _is_status_request(task: Any) -> bool:
    """Whether the request the channel will serve next is a status GET (waitress calls this
    with the channel's request lock held, so its list does not change under us)."""
    requests = getattr(task, "requests", None)
    if not requests:
        return False
    first = requests[0]
    return getattr(first, "command", None) == "GET" and getattr(first, "path", None) in STATUS_PATHS


class RunningServer:
    """A waitress server running on a background thread (tests, benchmarks, embedding)."""

    def __init__(self, app: Flask, options: ServerOptions):
        self.app = app
        self.server = create_server(app, options)
        self.url = f"http://{options.host}:{self.server.effective_port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True, name="waitress")
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close every connection, end the worker threads, free the models."""
        from waitress import wasyncore

        self.server.task_dispatcher.shutdown()
        wasyncore.close_all(self.server._map)  # the loop ends when its socket map is empty
        self._thread.join(timeout=10)
        self.app.extensions["forgellm.registry"].close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
