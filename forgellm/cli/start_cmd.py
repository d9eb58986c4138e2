"""``forgellm start``: model server + web app, browser opened, children supervised."""

from __future__ import annotations

import logging
import os
import signal
import sys
import webbrowser

import click

from forgellm.cli.access_options import access_options, resolve_access_token
from forgellm.security.auth import TOKEN_ENV
from forgellm.web.ports import ensure_free, wait_listening
from forgellm.web.supervisor import Child, Supervisor, environment
from forgellm.workspace import Workspace

#: Under the workspace's logs/: what the supervised model server had loaded (see `forgellm.serving.loaded_state`).
SERVER_STATE_FILE = "model-server.state.json"


def should_open_browser(no_browser: bool) -> bool:
    """Not when asked not to, under CI, or on a Linux machine without a display."""
    if no_browser or os.environ.get("CI"):
        return False
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return True


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address both servers listen on; anything but loopback needs an access token.",
)
@click.option(
    "--server-port", default=5001, show_default=True, type=click.IntRange(1, 65535), help="Model server port."
)
@click.option("--web-port", default=5002, show_default=True, type=click.IntRange(1, 65535), help="Web app port.")
@click.option("--no-browser", is_flag=True, help="Do not open the browser.")
@access_options
def start(
    host: str, server_port: int, web_port: int, no_browser: bool, token: str | None, generate_token: bool
) -> None:
    """Start the model server and the web app, and open the browser. See docs/web.md.

    The model server is restarted if it dies, and loads the model it had loaded again. Ctrl-C (or SIGTERM) stops both and every
    training run started from the web app.

    \b
    Examples:
      forgellm start
      forgellm start --web-port 8080 --no-browser
      forgellm start --host 0.0.0.0 --generate-token
    """
    logging.getLogger("forgellm").setLevel(logging.INFO)
    token = resolve_access_token(host, token, generate_token)
    ensure_free(host, server_port, "--server-port")
    ensure_free(host, web_port, "--web-port")
    # A wildcard bind is reached locally through loopback (the web app's calls, the browser).
    local = "127.0.0.1" if host == "0.0.0.0" else host
    server_url = f"http://{local}:{server_port}"
    web_url = f"http://{local}:{web_port}"
    python = sys.executable
    env = {k: v for k, v in environment().items() if k != TOKEN_ENV}
    if token:
        env[TOKEN_ENV] = token  # both children read it; never on a command line
    # The model server records its loaded model here and loads it again when it is restarted; a new
    # `forgellm start` begins with no model, as a plain `forgellm server` does.
    state_file = Workspace.current().logs_dir / SERVER_STATE_FILE
    state_file.unlink(missing_ok=True)
    supervisor = Supervisor(
        [
            Child(
                "model server",
                [
                    python,
                    "-m",
                    "forgellm",
                    "server",
                    "--host",
                    host,
                    "--port",
                    str(server_port),
                    "--state-file",
                    str(state_file),
                ],
            ),
            Child(
                "web app",
                [
                    python,
                    "-m",
                    "forgellm.web.main",
                    "--host",
                    host,
                    "--port",
                    str(web_port),
                    "--server-url",
                    server_url,
                ],
            ),
        ],
        env=env,
    )
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    supervisor.start()
    if wait_listening(local, web_port, timeout=60):
        login = " (log in with the access token)" if token else ""
        click.echo(f"ForgeLLM is running: {web_url}{login}  (model server {server_url}); Ctrl-C stops it")
        if should_open_browser(no_browser):
            webbrowser.open(web_url)
    sys.exit(supervisor.watch())
