"""Incremental reading of a run's ``metrics.jsonl``.

One reader serves both the live tail and a reconnecting browser's catch-up, so both number
events the same way: the index of an event is its position among the file's parsable,
complete lines. A torn last line (no newline yet) is left for the next read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events in complete lines from byte ``offset`` on, and the offset after the last complete line."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    events = [event for line in chunk[: end + 1].splitlines() if (event := parse_line(line)) is not None]
    return events, offset + end + 1


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One event, or None for a blank or malformed line (readers skip those)."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None
