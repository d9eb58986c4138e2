"""``metrics.jsonl``: one JSON event per line, the contract between the trainer and every reader.

Each event kind is defined once here (`Event` and the keys it must carry in `FIELDS`); the
trainer writes through `MetricsWriter`, which refuses an event without its keys, and readers
compare with `Event` members instead of repeating strings. An event may carry more keys
(e.g. ``qa_accuracy`` on ``eval``); readers ignore the ones they do not know.

The writer appends, flushes and fsyncs every event so a reader (another process) sees it at
once and a crash loses at most the line being written; readers skip a torn last line.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any


class Event(StrEnum):
    START = "start"
    RESUME = "resume"
    TRAIN = "train"
    EVAL = "eval"
    CHECKPOINT = "checkpoint"
    OVERFITTING = "overfitting"
    EARLY_STOP = "early_stop"
    DONE = "done"
    ERROR = "error"


_OPENING = (
    "total_steps",
    "run_name",
    "training_type",
    "fine_tune_type",
    "engine",
    "model",
    "trainable_params",
    "total_params",
    "world_size",
    "global_batch_size",
)

#: The keys each event carries besides ``event``, ``time`` and ``step`` (docs/run-format.md explains them).
FIELDS: dict[Event, tuple[str, ...]] = {
    Event.START: _OPENING,
    Event.RESUME: (*_OPENING, "changed"),  # changed: {key: [before, after]} of config.yaml
    Event.TRAIN: (
        "loss",
        "learning_rate",
        "tokens",
        "trained_tokens",
        "tokens_per_second",
        "grad_norm",
        "peak_memory_gb",
        "elapsed",
    ),
    # val_ppl too, except in preference runs (their loss is no language-model loss); they add val_accuracy etc.
    Event.EVAL: ("val_loss", "train_loss"),
    Event.CHECKPOINT: ("path", "val_loss"),
    Event.OVERFITTING: ("reason", "val_loss", "best_val_loss"),
    Event.EARLY_STOP: ("reason", "best_step"),
    Event.DONE: ("status", "best_checkpoint", "best_val_loss", "final_loss"),
    Event.ERROR: ("message",),
}
OPENINGS = (Event.START, Event.RESUME)  # the event that begins each process's part of a run


def make_event(event: Event | str, step: int, **values: Any) -> dict[str, Any]:
    """One event record; ValueError (a bug in the caller) when the kind is unknown or a key is missing."""
    kind = Event(event)
    missing = [key for key in FIELDS[kind] if key not in values]
    if missing:
        raise ValueError(f"{kind} event without {', '.join(missing)}")
    return {
        "event": kind.value,
        "time": round(time.time(), 3),
        "step": int(step),
        **{k: _jsonable(v) for k, v in values.items()},
    }


class MetricsWriter:
    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")
        if _ends_torn(path):  # a process killed mid-line: start the next event on a line of its own
            self._fh.write("\n")
            self._fh.flush()

    def write(self, event: Event | str, step: int, **values: Any) -> dict[str, Any]:
        return self.append(make_event(event, step, **values))

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append an event built by `make_event` (the loop builds one record for every callback)."""
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


def parse_line(line: bytes | str) -> dict[str, Any] | None:
    """One event, or None for a blank, torn or malformed line (readers skip those)."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def iter_events(path: Path) -> Iterator[dict[str, Any]]:
    """Events of a metrics file in order; a torn (partly written) line is skipped."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            if (event := parse_line(line)) is not None:
                yield event


def read_events(path: Path | str, *, event: Event | str | None = None) -> list[dict[str, Any]]:
    """Every event (or every event of one kind) of ``metrics.jsonl``."""
    return [r for r in iter_events(Path(path)) if event is None or r["event"] == event]


def read_new_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events in complete lines from byte ``offset`` on, and the offset after the last complete line.

    The live tail and a reconnecting browser's catch-up both read through this, so both number
    events alike; a torn last line (no newline yet) is left for the next read."""
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


def last_events(path: Path, tail_bytes: int = 64 * 1024) -> dict[str, dict[str, Any]]:
    """The last event of each kind in the file's final ``tail_bytes`` (enough for a summary)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - tail_bytes, 0))
            lines = fh.read().splitlines()
    except OSError:
        return {}
    last: dict[str, dict[str, Any]] = {}
    for line in lines:
        if (event := parse_line(line)) is not None:
            last[event["event"]] = event
    return last


def first_event(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            return parse_line(fh.readline())
    except OSError:
        return None
