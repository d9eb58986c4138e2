"""The SocketIO side of the security checks, for a Flask-SocketIO ``connect`` handler.

Browsers do not apply the same-origin policy to WebSockets, so the handshake gets the
checks of a state-changing request (same origin, loopback Host when bound to loopback)
plus the access token, and a connection failing any of them is refused.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from forgellm.security import auth, csrf


def authorize_socketio(auth_payload: dict[str, Any] | None = None) -> None:
    """Call first in the ``connect`` handler; raises ConnectionRefusedError to refuse.

    Browsers send the login cookie with the handshake; other clients pass
    ``auth={"token": ...}`` or a header.
    """
    site = current_app.extensions.get(csrf.EXTENSION)
    if site is not None:
        problem = csrf.site_problem(loopback_only=site["loopback_only"], state_changing=True)
        if problem:
            raise ConnectionRefusedError(problem)
    settings = current_app.extensions.get(auth.EXTENSION)
    if settings is not None and not auth.is_authorized(settings["token"], auth_payload):
        raise ConnectionRefusedError("unauthorized: this server requires the ForgeLLM access token")
