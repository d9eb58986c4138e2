"""Serve the web app: ``python -m forgellm.web.main`` (what ``forgellm web`` runs).

Production set-up as the Flask-SocketIO deployment docs describe: ``async_mode="gevent"``
with gevent's WSGI server, WebSocket through simple-websocket, and the standard library
monkey-patched first so blocking calls (subprocesses, the model-server proxy) yield.
"""

if __name__ == "__main__":  # patch before anything else imports socket, threading or ssl
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from forgellm.errors import ForgeError  # noqa: E402
from forgellm.security import configure_logging  # noqa: E402
from forgellm.security.auth import TOKEN_ENV  # noqa: E402

log = logging.getLogger("forgellm.web")


def serve(host: str, port: int, server_url: str, token: str | None) -> None:
    """Run the web app until SIGINT/SIGTERM; then stop the training runs it started.

    ``token`` (from ``$FORGELLM_TOKEN``, never the command line where ``ps`` shows it) is
    required from browsers and sent to the model server; a non-loopback ``host`` needs one.
    """
    import gevent

    from forgellm.web.app import create_app
    from forgellm.web.ports import ensure_free

    ensure_free(host, port, "--port")
    app = create_app(
        {"SOCKETIO_ASYNC_MODE": "gevent", "MODEL_SERVER_URL": server_url, "HOST": host, "ACCESS_TOKEN": token}
    )
    services = app.extensions["forgellm"]
    socketio = services["socketio"]

    def shutdown() -> None:
        log.info("stopping: ending the training runs this app started")
        services["jobs"].stop_all()
        services["tasks"].stop_all()
        socketio.stop()  # serve_forever returns, the process exits normally

    for signum in (signal.SIGTERM, signal.SIGINT):
        # Signal callbacks run in gevent's hub, where nothing may block: do the work in a greenlet.
        gevent.signal_handler(signum, lambda: gevent.spawn(shutdown))
    login = "; log in with the access token" if token else ""
    print(f"ForgeLLM web app on http://{host}:{port} (model server {server_url}){login}", flush=True)
    socketio.run(app, host=host, port=port, log_output=False, use_reloader=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="forgellm web", description="Serve the ForgeLLM web app.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5002)
    parser.add_argument("--server-url", default="http://127.0.0.1:5001")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied call is noise
    configure_logging("web")  # JSON lines under <workspace>/logs/, rotated, secrets redacted
    try:
        serve(args.host, args.port, args.server_url, os.environ.get(TOKEN_ENV) or None)
    except ForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
