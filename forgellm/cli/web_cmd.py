"""``forgellm web``: the web app alone (``forgellm start`` runs it with the model server)."""

from __future__ import annotations

import os
import sys

import click

from forgellm.web.ports import ensure_free


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5002, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--server-url", default="http://127.0.0.1:5001", show_default=True,
              help="The model server the Testing and Models tabs talk to.")
@click.pass_context
def web(ctx: click.Context, host: str, port: int, server_url: str) -> None:
    """Serve the web app (Flask-SocketIO on gevent's WSGI server).

    \b
    Examples:
      forgellm web
      forgellm web --port 8080 --server-url http://127.0.0.1:5001
    """
    ensure_free(host, port, "--port")
    argv = [sys.executable, "-m", "forgellm.web.main", "--host", host, "--port", str(port),
            "--server-url", server_url, *(["--debug"] if (ctx.obj or {}).get("debug") else [])]
    # Replace this process (same pid) so gevent can patch the standard library before any import.
    os.execv(sys.executable, argv)
