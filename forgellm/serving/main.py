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
        return waitress_server(app, host=options.host, port=options.port, threads=options.threads,
                               channel_request_lookahead=1, ident="forgellm",
                               clear_untrusted_proxy_headers=True)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {options.port} on {options.host} is already in use (another server?): "
                            f"stop it or choose another port with --port") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise UserError(f"cannot listen on {options.host}:{options.port} ({exc.strerror}): "
                            f"check --host and --port") from None
        raise


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

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
