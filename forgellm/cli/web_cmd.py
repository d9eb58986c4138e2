"""``forgellm web``: the web app alone (``forgellm start`` runs it with the model server)."""

from __future__ import annotations

import os
import sys

import click

from forgellm.cli.access_options import access_options, resolve_access_token
from forgellm.security.auth import TOKEN_ENV
from forgellm.web.ports import ensure_free


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback needs an access token.",
)
@click.option("--port", default=5002, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option(
    "--server-url",
    default="http://127.0.0.1:5001",
    show_default=True,
    help="The model server the Testing and Models tabs talk to.",
)
@access_options
@click.pass_context
def web(ctx: click.Context, host: str, port: int, server_url: str, token: str | None, generate_token: bool) -> None:
    """Serve the web app (Flask-SocketIO on gevent's WSGI server). See docs/web.md.

    \b
    Examples:
      forgellm web
      forgellm web --port 8080 --server-url http://127.0.0.1:5001
      FORGELLM_TOKEN=... forgellm web --host 0.0.0.0
    """
    token = resolve_access_token(host, token, generate_token)
    ensure_free(host, port, "--port")
    argv = [
        sys.executable,
        "-m",
        "forgellm.web.main",
        "--host",
        host,
        "--port",
        str(port),
        "--server-url",
        server_url,
        *(["--debug"] if (ctx.obj or {}).get("debug") else []),
    ]
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token:
        env[TOKEN_ENV] = token  # through the environment: the command line is visible to every user
    # Replace this process (same pid) so gevent can patch the standard library before any import.
    os.execve(sys.executable, argv, env)
