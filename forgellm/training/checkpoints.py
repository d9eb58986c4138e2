"""Writing a run's checkpoint folders: atomically, with a manifest, rotated, with the best one
named in ``best.json``. Reading them (which is intact, which is best) is `forgellm.runs.checkpoints`.

A checkpoint is first written to ``checkpoints/.tmp-step_NNNNNN``, its manifest last, and then
renamed, so a kill during a save leaves the previous checkpoints intact and never a half-written
one under a real name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from forgellm.jsonio import write_json_atomic
from forgellm.runs.checkpoints import (BEST_FILE, STATE_FILE, checkpoint_name, read_best, step_checkpoints,
                                       write_manifest)


class CheckpointStore:
    def __init__(self, run_dir: Path, max_keep: int):
        self.run_dir = run_dir
        self.folder = run_dir / "checkpoints"
        self.max_keep = max_keep

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
        val = state.get("val_loss")
        best = self.best()
        if val is not None and (best is None or best.get("val_loss") is None or val < best["val_loss"]):
            write_json_atomic(self.folder / BEST_FILE, {"checkpoint": name, "step": step, "val_loss": val})
        self._prune()
        return final

    def _prune(self) -> None:
        keep = {p.name for p in self.steps()[-self.max_keep:]}
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
