"""Writing a run's checkpoint folders: atomically, with a manifest, rotated, with the best one
named in ``best.json``. Reading them (which is intact, which is best) is `forgellm.runs.checkpoints`.

The best checkpoint is the one with the lowest ``val_loss`` or the highest ``qa_accuracy``
(``best_metric``), among checkpoints saved at an evaluation; ``best.json`` records the metric,
its value and the checkpoint's val_loss (and qa_accuracy when measured), and pruning keeps it.

A checkpoint is first written to ``checkpoints/.tmp-step_NNNNNN``, its manifest last, and then
renamed, so a kill during a save leaves the previous checkpoints intact and never a half-written
one under a real name.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forgellm.jsonio import write_json_atomic
from forgellm.runs.checkpoints import (
    BEST_FILE,
    STATE_FILE,
    checkpoint_name,
    read_best,
    step_checkpoints,
    write_manifest,
)

# metric -> True when higher is better
METRICS = {"val_loss": False, "qa_accuracy": True}


class CheckpointStore:
    def __init__(self, run_dir: Path, max_keep: int, metric: str = "val_loss"):
        if metric not in METRICS:
            raise ValueError(f"unknown best metric {metric!r}; expected one of {', '.join(METRICS)}")
        self.run_dir = run_dir
        self.folder = run_dir / "checkpoints"
        self.max_keep = max_keep
        self.metric = metric

    def steps(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return step_checkpoints(self.run_dir)

    def latest(self) -> Path | None:
        found = self.steps()
        return found[-1] if found else None

    def best(self) -> dict[str, Any] | None:
        return read_best(self.run_dir)

    def save(self, step: int, state: dict[str, Any], write: Callable[[Path], None]) -> Path:
        """Write a checkpoint with ``write(folder)`` plus ``trainer_state.json``; update best; prune."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = checkpoint_name(step)
        tmp = self.folder / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            write(tmp)
            write_json_atomic(tmp / STATE_FILE, state)
            write_manifest(tmp)  # last: a folder with a manifest is complete
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed save (full disk...) leaves no partial folder
            raise
        final = self.folder / name
        if final.exists():  # a resumed run saving the same step again
            old = self.folder / f".old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        if self._beats_best(state):
            record = {
                "checkpoint": name,
                "step": step,
                "metric": self.metric,
                "value": state[self.metric],
                "val_loss": state.get("val_loss"),
            }
            if state.get("qa_accuracy") is not None:
                record["qa_accuracy"] = state["qa_accuracy"]
            write_json_atomic(self.folder / BEST_FILE, record)
        self._prune()
        return final

    def _beats_best(self, state: dict[str, Any]) -> bool:
        """Whether a checkpoint with these measurements is the new best by ``self.metric``; ties on
        qa_accuracy go to the lower val_loss. A best.json chosen by another metric (a run resumed
        with another best_metric) is replaced by the first measured checkpoint."""
        value = state.get(self.metric)
        if value is None:
            return False
        best = self.best()
        if best is None or best.get("metric", "val_loss") != self.metric or best.get(self.metric) is None:
            return True
        if value != best[self.metric]:
            return value > best[self.metric] if METRICS[self.metric] else value < best[self.metric]
        val, best_val = state.get("val_loss"), best.get("val_loss")
        return self.metric != "val_loss" and val is not None and (best_val is None or val < best_val)

    def _prune(self) -> None:
        keep = {p.name for p in self.steps()[-self.max_keep :]}
        best = self.best()
        if best is not None:
            keep.add(best["checkpoint"])
        for path in self.steps():
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
        for stale in self.folder.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())
