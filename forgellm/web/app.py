"""The web app factory: ``create_app(test_config=None)``.

Config keys (``test_config`` overrides them):
  WORKSPACE           workspace root (default: ``$FORGELLM_HOME`` or the current directory)
  MODEL_SERVER_URL    the model server the ``/api/model/*`` routes are passed to
  SOCKETIO_ASYNC_MODE ``threading`` (tests) or ``gevent`` (``forgellm web``, after monkey-patching)
  LIVE_INTERVAL       seconds between two reads of the watched metrics files
  START_BACKGROUND    start the live-metrics and server-watch tasks (tests drive them by hand)
  TRAIN_COMMAND       the trainer command line (default ``python -m forgellm train``)
  HOST, ACCESS_TOKEN  the address served and its access token (see forgellm.security): a
                      non-loopback HOST needs a token, which every request then carries
  ROOTS               folders beyond the workspace that requests may name (os.pathsep-separated;
                      default $FORGELLM_ROOTS; see forgellm.access)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, jsonify, render_template
from flask_socketio import SocketIO

from forgellm import __version__
from forgellm.access import Roots
from forgellm.security import DEFAULT_MAX_BODY_BYTES, guard_socketio_transport, install_security, is_loopback
from forgellm.security.sockets import allowed_origin
from forgellm.web import openapi, sockets
from forgellm.web.routes import dashboard, datasets, models, proxy, runs, training
from forgellm.web.services.live_metrics import LiveMetrics
from forgellm.web.services.server_watch import ServerWatch
from forgellm.web.services.tasks import Tasks
from forgellm.web.services.training_jobs import TrainingJobs
from forgellm.workspace import Workspace

DEFAULTS: dict[str, Any] = {
    "MODEL_SERVER_URL": "http://127.0.0.1:5001",
    "SOCKETIO_ASYNC_MODE": "threading",
    "LIVE_INTERVAL": 0.5,
    "START_BACKGROUND": True,
    "TRAIN_COMMAND": None,
    "MAX_BODY_BYTES": DEFAULT_MAX_BODY_BYTES,
    "HOST": "127.0.0.1",
    "ACCESS_TOKEN": None,
    "ROOTS": None,
}


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # Flask's DefaultJSONProvider has it
    app.config.update(DEFAULTS)
    app.config.update(test_config or {})
    root = app.config.get("WORKSPACE")
    workspace = Workspace(Path(root).resolve()) if root else Workspace.current()
    app.config["WORKSPACE"] = workspace
    workspace.ensure()
    install_security(
        app,
        host=app.config["HOST"],
        token=app.config["ACCESS_TOKEN"],
        roots=Roots.of(workspace, listed=app.config["ROOTS"]),
        max_body_bytes=app.config["MAX_BODY_BYTES"],
    )

    # engine.io checks the origin itself, by our rule; the guard in front of it also checks the Host.
    loopback_only = is_loopback(app.config["HOST"])
    socketio = SocketIO(
        app,
        async_mode=app.config["SOCKETIO_ASYNC_MODE"],
        cors_allowed_origins=allowed_origin(loopback_only),
        logger=False,
        engineio_logger=False,
    )
    guard_socketio_transport(app, loopback_only=loopback_only)
    jobs = TrainingJobs(workspace, app.config["TRAIN_COMMAND"])
    watch = ServerWatch(
        socketio,
        app.config["MODEL_SERVER_URL"],
        app.config["ACCESS_TOKEN"],
        state_file=workspace.logs_dir / "server-watch.json",
    )  # survives a web restart
    live = LiveMetrics(
        socketio,
        workspace,
        interval=app.config["LIVE_INTERVAL"],
        on_tick=lambda: (socketio.emit("training_status", jobs.status()), watch.check()),
    )
    app.extensions["forgellm"] = {
        "socketio": socketio,
        "jobs": jobs,
        "live": live,
        "server_watch": watch,
        "tasks": Tasks(workspace),
    }
    sockets.register(socketio, workspace, live, watch)

    for blueprint in (training.bp, models.bp, runs.bp, dashboard.bp, datasets.bp, proxy.bp):
        app.register_blueprint(blueprint)

    # The page preloads every module at once instead of level by level along the import graph.
    assert app.static_folder is not None  # Flask(__name__) serves forgellm/web/static
    modules = sorted(p.name for p in Path(app.static_folder, "js").glob("*.js") if p.name != "app.js")

    @app.get("/")
    def index():
        return render_template("index.html", version=__version__, modules=modules)

    @app.get("/api/health")
    @openapi.doc("Liveness of the web app")
    def health():
        return jsonify({"ok": True, "version": __version__})

    @app.get("/api/openapi.json")
    @openapi.doc("This OpenAPI document")
    def openapi_json():
        return jsonify(openapi.build(app))

    if app.config["START_BACKGROUND"]:
        live.start()
    return app
