"""JSON files as ForgeLLM reads and writes them: reads that tolerate a missing or broken file
(configs and status files of runs that may be mid-write or gone), writes that are atomic."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: Any, *, in_place_on_full_disk: bool = False) -> None:
    """Write through a temporary file, fsync, rename: a reader sees the old file or the new one.

    A failed write leaves no temporary file. With ``in_place_on_full_disk`` a small file that
    must stay current (a run's status) is, when the disk has no room for the temporary copy,
    rewritten in place instead: its own blocks are reused (a reader may then see a torn file
    for a moment, which `read_json` treats as missing)."""
    tmp = path.with_name(f".{path.name}.tmp")
    text = json.dumps(data, indent=2)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if not (in_place_on_full_disk and exc.errno in (errno.ENOSPC, errno.EDQUOT) and path.exists()):
            raise
        with open(path, "r+", encoding="utf-8") as fh:  # not "w": truncating first would free the blocks
            fh.write(text)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
