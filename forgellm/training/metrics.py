"""``metrics.jsonl``: one JSON event per line, the contract between trainer, web app and dashboards.

The writer appends, flushes and fsyncs every event so a reader (another process) sees it at
once and a crash loses at most the line being written; readers skip a torn last line.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator


class MetricsWriter:
    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")
        if _ends_torn(path):  # a process killed mid-line: start the next event on a line of its own
            self._fh.write("\n")
            self._fh.flush()

    def write(self, event: str, step: int, **values: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.time(), 3), "step": step,
                  **{k: _jsonable(v) for k, v in values.items()}}
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return record

    def close(self) -> None:
        self._fh.close()


def _ends_torn(path: Path) -> bool:
    with open(path, "rb") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return False
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf; null keeps the line parseable everywhere.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def iter_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """Events of a metrics file in order; a torn (partly written) line is skipped."""
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "event" in record:
                yield record


def read_metrics(path: Path | str, *, event: str | None = None) -> list[dict[str, Any]]:
    """Every event (or every event of one kind) of ``metrics.jsonl``."""
    return [r for r in iter_metrics(Path(path)) if event is None or r["event"] == event]
