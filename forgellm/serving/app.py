"""The model server's Flask app: ``create_app(config)`` wires the cache and the two APIs.

Configuration keys (``config`` overrides the defaults):

- ``FORGELLM_HOST``: the address the server listens on (the access-token policy depends on it).
- ``FORGELLM_TOKEN``: access token every request must carry (required off loopback).
- ``FORGELLM_MAX_BODY_BYTES``: largest request body (larger gets 413).
- ``FORGELLM_MEMORY_BUDGET_GB``: the model cache's budget; default half the machine's RAM.
- ``FORGELLM_ENGINE``: engine for models loaded without one (``auto``, ``torch``, ``mlx``).
- ``FORGELLM_WORKSPACE``: a `Workspace` to resolve model names in; default the current one.
- ``FORGELLM_STATE_FILE``: where the current model is recorded so a restarted server loads it
  again (`forgellm.serving.loaded_state`); None keeps no record.
- ``FORGELLM_ROOTS``: folders beyond the workspace and the Hugging Face cache that requests may
  read models from (``os.pathsep``-separated); default ``$FORGELLM_ROOTS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify

from forgellm.access import Roots
from forgellm.security import DEFAULT_MAX_BODY_BYTES, install_security
from forgellm.serving import api_openai, api_reference, http_errors
from forgellm.serving.loaded_state import LoadedState
from forgellm.serving.openapi import build_openapi
from forgellm.serving.registry import GB, ModelRegistry
from forgellm.workspace import Workspace

DEFAULTS: dict[str, Any] = {
    "FORGELLM_HOST": "127.0.0.1",
    "FORGELLM_TOKEN": None,
    "FORGELLM_MAX_BODY_BYTES": DEFAULT_MAX_BODY_BYTES,
    "FORGELLM_MEMORY_BUDGET_GB": None,
    "FORGELLM_ENGINE": None,
    "FORGELLM_WORKSPACE": None,
    "FORGELLM_STATE_FILE": None,
    "FORGELLM_ROOTS": None,
}


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    app.config.update(config or {})
    app.json.sort_keys = False  # type: ignore[attr-defined]  # Flask's DefaultJSONProvider; keep the documented field order
    budget_gb = app.config["FORGELLM_MEMORY_BUDGET_GB"]
    state_file = app.config["FORGELLM_STATE_FILE"]
    app.extensions["forgellm.registry"] = ModelRegistry(
        memory_budget_bytes=int(budget_gb * GB) if budget_gb else None,
        engine=app.config["FORGELLM_ENGINE"],
        workspace=app.config["FORGELLM_WORKSPACE"],
        state=LoadedState(Path(state_file)) if state_file else None,
    )
    # Token, cross-site checks, body limit (413), JSON errors, request logs: as every ForgeLLM server.
    workspace = app.config["FORGELLM_WORKSPACE"] or Workspace.current()
    install_security(
        app,
        host=app.config["FORGELLM_HOST"],
        token=app.config["FORGELLM_TOKEN"],
        roots=Roots.of(workspace, listed=app.config["FORGELLM_ROOTS"]),
        max_body_bytes=app.config["FORGELLM_MAX_BODY_BYTES"],
    )
    http_errors.register(app)
    app.register_blueprint(api_reference.bp)
    app.register_blueprint(api_openai.bp)
    openapi = build_openapi()

    @app.get("/api/openapi.json")
    def openapi_document() -> Response:
        return jsonify(openapi)

    return app


def registry_of(app: Flask) -> ModelRegistry:
    return app.extensions["forgellm.registry"]
