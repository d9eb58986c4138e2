"""A small Flask (+SocketIO) app secured with ``install_security``, for the security unit tests."""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask_socketio import SocketIO

from forgellm.errors import NotFoundError
from forgellm.security import authorize_socketio, install_security

TOKEN = "test-token-0123456789abcdef"


def make_app(
    *, host: str = "127.0.0.1", token: str | None = None, max_body_bytes: int = 1024
) -> tuple[Flask, SocketIO]:
    app = Flask("security-test")
    socketio = SocketIO(app, async_mode="threading")

    @app.get("/api/status")
    def status():
        return jsonify(ok=True)

    @app.post("/api/echo")
    def echo():
        return jsonify(got=request.get_json(silent=True))

    @app.get("/api/missing")
    def missing():
        raise NotFoundError("run 'x' does not exist")

    @app.get("/api/bug")
    def bug():
        raise ZeroDivisionError("boom")

    @socketio.on("connect")
    def connect(auth=None):
        authorize_socketio(auth)

    install_security(app, host=host, token=token, max_body_bytes=max_body_bytes)
    return app, socketio
