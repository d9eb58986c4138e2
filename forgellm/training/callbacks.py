"""Consumers of the loop's events: the metrics file, status.json, the terminal, TensorBoard.

Each is a callable taking one event dict; the loop does not know which are attached.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from forgellm.jsonio import write_json_atomic
from forgellm.runs.events import OPENINGS, Event, MetricsWriter

log = logging.getLogger(__name__)


class MetricsFile:
    """Appends every event to ``metrics.jsonl`` (flushed and fsynced)."""

    def __init__(self, path: Path):
        self.writer = MetricsWriter(path)

    def __call__(self, record: dict[str, Any]) -> None:
        self.writer.append(record)

    def close(self) -> None:
        self.writer.close()


class StatusFile:
    """Keeps ``status.json`` current: running while training, then done/stopped/failed.

    Nothing is written before the loop's ``start`` or ``resume`` event, so a resume that fails
    before training (a missing dataset, no intact checkpoint) leaves a finished run's status as
    it was. ``done`` is written after ``final/`` exists: the loop saves it before its done event."""

    def __init__(self, path: Path, total_steps: int, *, resumed: bool = False):
        self.path = path
        self.total_steps = total_steps
        self.resumed = resumed
        self.started = False

    def write(self, status: str, step: int, **extra: Any) -> None:
        write_json_atomic(self.path, {"status": status, "pid": os.getpid(), "step": step,
                                      "total_steps": self.total_steps, "updated": time.time(), **extra},
                          in_place_on_full_disk=True)

    def __call__(self, record: dict[str, Any]) -> None:
        event = record["event"]
        if event in OPENINGS:
            self.started = True
        if event == Event.DONE:
            self.write("done" if record.get("status") == "completed" else "stopped", record["step"])
        elif event == Event.ERROR:
            if self.started or not self.resumed:
                self.write("failed", record["step"], message=record.get("message"))
        elif event in (Event.TRAIN, Event.CHECKPOINT, *OPENINGS):
            self.write("running", record["step"])


class Progress:
    """A progress bar with loss, tok/s and ETA on a terminal; plain periodic lines otherwise."""

    def __init__(self, total_steps: int, start_step: int = 0, *, stream=None, every_seconds: float = 10.0):
        self.stream = stream or sys.stderr
        self.total = total_steps
        self.tty = self.stream.isatty()
        self.every = every_seconds
        self._last_line = 0.0
        self._started = time.time()
        self._start_step = start_step
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", file=self.stream, dynamic_ncols=True)

    def __call__(self, record: dict[str, Any]) -> None:
        event, step = record["event"], record["step"]
        if event == Event.TRAIN:
            if self.bar is not None:
                self.bar.update(step - self.bar.n)
                self.bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}",
                                     refresh=False)
            elif time.time() - self._last_line >= self.every or step == self.total:
                self._last_line = time.time()
                self._line(f"step {step}/{self.total} loss {record['loss']:.4f} lr {record['learning_rate']:.2e} "
                           f"tok/s {record['tokens_per_second']:.0f} eta {self._eta(step)}")
        elif event == Event.EVAL:
            detail = (f"val_ppl {record['val_ppl']:.2f}" if "val_ppl" in record  # cpt, ift; preference: its accuracy
                      else f"val_accuracy {record.get('val_accuracy', float('nan')):.3f} "
                           f"val_margin {record.get('val_margin', float('nan')):.3f}")
            self._line(f"step {step}: val_loss {record['val_loss']:.4f} {detail}")
        elif event in (Event.CHECKPOINT, Event.OVERFITTING, Event.EARLY_STOP, Event.ERROR):
            detail = record.get("path") or record.get("reason") or record.get("message")
            self._line(f"step {step}: {event} {detail}")
        elif event == Event.DONE and self.bar is not None:
            self.bar.close()

    def _eta(self, step: int) -> str:
        done = step - self._start_step
        if done <= 0:
            return "?"
        seconds = (time.time() - self._started) / done * (self.total - step)
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


class TensorBoard:
    """Scalars for TensorBoard users (``tensorboard: true``); needs the tensorboard package."""

    SCALARS = {Event.TRAIN: ("loss", "learning_rate", "tokens_per_second", "grad_norm", "accuracy", "margin",
                             "reward_chosen", "reward_rejected", "logps_chosen", "logps_rejected"),
               Event.EVAL: ("val_loss", "val_ppl", "val_accuracy", "val_margin", "val_reward_chosen",
                            "val_reward_rejected", "val_logps_chosen", "val_logps_rejected")}

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter  # raises ImportError without tensorboard

        self.writer = SummaryWriter(str(folder))

    def __call__(self, record: dict[str, Any]) -> None:
        for key in self.SCALARS.get(record["event"], ()):
            if isinstance(record.get(key), (int, float)):
                self.writer.add_scalar(f"{record['event']}/{key}", record[key], record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
