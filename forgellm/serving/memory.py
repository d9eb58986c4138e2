"""Running out of memory, recognised whichever layer noticed it, and told as a 409 the user can act on.

Python raises `MemoryError` (also for a failed ``mmap`` of the weights), torch raises
``OutOfMemoryError`` on the GPU and a ``RuntimeError`` naming the CPU allocator otherwise,
MLX a ``RuntimeError`` naming Metal's allocator; an engine may have wrapped any of them in a
`UserError`. The model server then answers with what to do and keeps serving the models it has.
"""

from __future__ import annotations

import errno

import psutil

from forgellm.errors import ConflictError

GB = 1024**3

_MESSAGES = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "insufficient memory",
    "failed to allocate",
    "attempting to allocate",
)


class InsufficientMemoryError(ConflictError):
    """Not enough memory for a model (or a generation); the server keeps running."""

    kind = "insufficient_memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is an allocation failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError) or type(current).__name__ == "OutOfMemoryError":
            return True
        if isinstance(current, OSError) and current.errno == errno.ENOMEM:
            return True
        if isinstance(current, RuntimeError) and any(m in str(current).lower() for m in _MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def load_failure(exc: BaseException, name: str, estimated_bytes: int) -> InsufficientMemoryError:
    available = psutil.virtual_memory().available
    return InsufficientMemoryError(
        f"not enough memory to load {name} (its weights take about {estimated_bytes / GB:.2f} GB; "
        f"{available / GB:.2f} GB of RAM is free; the engine said: {_first_line(exc)}). Unload other models "
        f"(POST /api/model/unload), close other programs, or use a smaller or quantized model. "
        f"The models already loaded keep serving."
    )


def generation_failure(exc: BaseException, name: str) -> InsufficientMemoryError:
    return InsufficientMemoryError(
        f"{name} ran out of memory while generating ({_first_line(exc)}): ask for fewer tokens or send a "
        f"shorter prompt, or unload other models (POST /api/model/unload)"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
