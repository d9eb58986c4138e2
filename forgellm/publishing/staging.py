"""Write a folder all at once: build it under a temporary name beside the target, then rename.

A failure (or Ctrl-C) removes the temporary folder, so no half-written model is ever left
where a user or another tool would find it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from forgellm.errors import ConflictError


def refuse_existing(out: Path) -> None:
    if out.exists():
        raise ConflictError(f"output folder {out} already exists: choose another --out/--name or delete it first")


@contextmanager
def staged_folder(out: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``out`` when the block succeeds; with
    ``replace`` an existing ``out`` is removed only then (a failure keeps the old one)."""
    out = Path(out)
    if not replace:
        refuse_existing(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield staging
        if replace and out.exists():
            shutil.rmtree(out)
        refuse_existing(out)  # someone may have created it meanwhile
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
