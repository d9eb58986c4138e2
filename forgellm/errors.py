"""One exception hierarchy for the package.

The core raises these; the CLI turns them into one line and exit status 2, the HTTP
servers into a 4xx with a JSON body. Errors of the libraries underneath are translated
at the boundary so users never see a backend's internals; an `OSError` that reaches the
CLI's edge becomes one line too (`os_error_message`).
"""

from __future__ import annotations

import errno


class ForgeError(Exception):
    """Base class of every error ForgeLLM raises on purpose."""

    #: HTTP status the servers answer with.
    status: int = 500
    #: Short machine-readable kind, used as ``error.type`` in JSON bodies.
    kind: str = "internal_error"
    #: Seconds a client should wait before asking again (sent as Retry-After); None: not a "try later".
    retry_after_s: int | None = None

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


#: The operating system's refusals in words (its own strerror for the rest).
OS_ERROR_CAUSES: dict[int, str] = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file would exceed the file size limit",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EEXIST: "a file or folder of that name exists already",
}

_OS_ERROR_ADVICE: dict[int, str] = {
    errno.ENOSPC: "free some disk space or choose a folder on another disk",
    errno.EDQUOT: "free some disk space or choose a folder on another disk",
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
}


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system error that reached the CLI's edge: the path(s), the cause
    in words and, where there is one, the way out (e.g. "/x/cfg.yaml: permission denied; check
    its permissions or choose another path")."""
    cause = OS_ERROR_CAUSES.get(exc.errno or 0) or exc.strerror or str(exc) or type(exc).__name__
    where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    advice = _OS_ERROR_ADVICE.get(exc.errno or 0)
    return f"{where + ': ' if where else ''}{cause}{'; ' + advice if advice else ''}"
