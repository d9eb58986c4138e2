"""Turning the operating system's refusal to write (full disk, read-only folder, no permission,
file size limit) into one clear error that says what happened and what to do.

A run that hits one stops with this error; the checkpoints written before stay intact
(each is complete under its final name, see `checkpoints`), so it can be resumed once there
is room again.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from forgellm.errors import OS_ERROR_CAUSES, UserError


class StorageError(UserError):
    """The run's files could not be written; what was saved before is kept."""

    status = 507
    kind = "storage_error"


_OS_ERROR = re.compile(r"os error (\d+)")


def as_os_error(exc: BaseException) -> OSError | None:
    """The operating-system error behind ``exc``: itself, or the one that a native writer (safetensors)
    only names in its message ("... (os error 28)"); None for any other error."""
    if isinstance(exc, OSError):
        return exc
    found = _OS_ERROR.search(str(exc))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code))


def storage_error(exc: OSError, folder: Path | None = None, *, resumable: bool = False) -> StorageError:
    """A `StorageError` for ``exc``, naming the file (else ``folder``), the cause and the way out."""
    cause = OS_ERROR_CAUSES.get(exc.errno or 0, exc.strerror or str(exc))
    where = exc.filename or folder
    advice = "free some disk space or set output_dir to a writable folder with room"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "make the folder writable or set output_dir to a writable folder"
    message = f"cannot write{f' in {where}' if where else ''}: {cause}; {advice}"
    if resumable and folder is not None:
        message += f"; checkpoints saved so far are kept: continue with `forgellm train --resume {folder}`"
    return StorageError(message)
