"""One exception hierarchy for the package.

The core raises these; the CLI turns them into one line and exit status 2, the HTTP
servers into a 4xx with a JSON body. Errors of the libraries underneath are translated
at the boundary so users never see a backend's internals.
"""

from __future__ import annotations


class ForgeError(Exception):
    """Base class of every error ForgeLLM raises on purpose."""

    #: HTTP status the servers answer with.
    status: int = 500
    #: Short machine-readable kind, used as ``error.type`` in JSON bodies.
    kind: str = "internal_error"

    def __init__(self, message: str = "", *, field: str | None = None):
        super().__init__(message)
        #: The input at fault (a request field, a config key, an option), dotted for nested
        #: fields; the HTTP servers answer it as ``error.field``, the web form marks it.
        self.field = field


class UserError(ForgeError):
    """Bad input: the message names the problem and what to do about it."""

    status = 400
    kind = "invalid_request_error"


class NotFoundError(UserError):
    """A model, adapter, run, checkpoint or file that does not exist."""

    status = 404
    kind = "not_found_error"


class ConflictError(UserError):
    """The request is valid but the current state forbids it (e.g. no model loaded)."""

    status = 409
    kind = "conflict_error"


class AccessError(UserError):
    """A path outside the workspace, or a request without the access token."""

    status = 403
    kind = "permission_error"


class EngineUnavailableError(UserError):
    """An engine that is not installed or cannot run on this machine."""

    kind = "engine_unavailable"
