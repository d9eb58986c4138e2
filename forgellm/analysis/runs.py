"""A training run read back from its folder: metrics as columns, config, checkpoints.

Analysis, dashboards and the publisher all start here, so they agree on what a run holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from forgellm.errors import NotFoundError, UserError
from forgellm.models.resolve import RUN_MARKER, resolve
from forgellm.training.metrics import read_metrics
from forgellm.workspace import Workspace

TRAIN_KEYS = ("loss", "learning_rate", "tokens_per_second", "grad_norm", "peak_memory_gb", "trained_tokens", "elapsed",
              "logps_chosen")  # preference runs only (NaN elsewhere)
EVAL_KEYS = ("val_loss", "val_ppl", "train_loss", "val_accuracy", "val_margin")  # the last two: preference runs
STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class Columns:
    """One event kind as numpy columns; a missing or null value is NaN."""

    step: np.ndarray
    values: dict[str, np.ndarray]

    @classmethod
    def from_events(cls, events: list[dict[str, Any]], keys: tuple[str, ...]) -> "Columns":
        by_step: dict[int, dict[str, Any]] = {}
        for e in events:  # a resumed run may repeat a step: the later event wins
            by_step[int(e["step"])] = e
        steps = sorted(by_step)
        values = {k: np.array([_number(by_step[s].get(k)) for s in steps], dtype=np.float64) for k in keys}
        return cls(np.array(steps, dtype=np.int64), values)

    def __len__(self) -> int:
        return len(self.step)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.values[key]


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return float("nan")


@dataclass
class Checkpoint:
    step: int
    name: str  # step_000050
    val_loss: float | None
    exists: bool


@dataclass
class RunMetrics:
    """Everything a run's ``metrics.jsonl`` says, plus its config when the folder is known."""

    name: str
    train: Columns
    evals: Columns
    checkpoints: list[Checkpoint]
    start: dict[str, Any] = field(default_factory=dict)
    done: dict[str, Any] | None = None
    notices: list[dict[str, Any]] = field(default_factory=list)  # overfitting, early_stop, error events
    config: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None

    @classmethod
    def from_events(cls, events: list[dict[str, Any]], *, name: str = "run", run_dir: Path | None = None,
                    config: dict[str, Any] | None = None) -> "RunMetrics":
        kinds: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            if isinstance(e.get("step"), (int, float)):
                kinds.setdefault(e["event"], []).append(e)
        evals = Columns.from_events(kinds.get("eval", []), EVAL_KEYS)
        return cls(
            name=name,
            train=Columns.from_events(kinds.get("train", []), TRAIN_KEYS),
            evals=evals,
            checkpoints=_checkpoints(kinds.get("checkpoint", []), evals, run_dir),
            start=(kinds.get("start") or [{}])[-1],
            done=(kinds.get("done") or [None])[-1],
            notices=[e for k in ("overfitting", "early_stop", "error") for e in kinds.get(k, [])],
            config=config or {},
            run_dir=run_dir,
        )

    @property
    def total_steps(self) -> int | None:
        total = self.start.get("total_steps") or self.config.get("max_iterations")
        return int(total) if isinstance(total, (int, float)) else None


def _checkpoints(events: list[dict[str, Any]], evals: Columns, run_dir: Path | None) -> list[Checkpoint]:
    """Checkpoints named by events, plus folders on disk that no event names (a torn metrics file)."""
    val_at = {int(s): v for s, v in zip(evals.step, evals["val_loss"]) if np.isfinite(v)}
    found: dict[int, Checkpoint] = {}
    for e in events:
        step = int(e["step"])
        name = Path(str(e.get("path") or f"step_{step:06d}")).name
        val = e.get("val_loss")
        val = float(val) if isinstance(val, (int, float)) else val_at.get(step)
        found[step] = Checkpoint(step, name, val, exists=run_dir is None or (run_dir / "checkpoints" / name).is_dir())
    if run_dir is not None and (run_dir / "checkpoints").is_dir():
        for folder in (run_dir / "checkpoints").iterdir():
            match = STEP_DIR.match(folder.name)
            if match and folder.is_dir() and int(match.group(1)) not in found:
                step = int(match.group(1))
                found[step] = Checkpoint(step, folder.name, val_at.get(step), exists=True)
    return [found[s] for s in sorted(found)]


def find_run(name: str | Path, workspace: Workspace | None = None) -> Path:
    """A run folder by path or by name under models/ (``cpt/my-run``, ``my-run``)."""
    path = Path(name)
    if not (path.is_dir() and _is_run(path)):
        try:
            path = resolve(str(name), workspace).path
        except NotFoundError:
            raise NotFoundError(f"run {str(name)!r} not found: pass a run folder (models/cpt/<run> or "
                                f"models/ift/<run>) or its name") from None
    if not _is_run(path):
        raise UserError(f"{path} is not a training run: it has no metrics.jsonl or {RUN_MARKER} marker")
    return path.resolve()


def _is_run(path: Path) -> bool:
    return (path / RUN_MARKER).exists() or (path / "metrics.jsonl").exists()


def load_run(run_dir: Path) -> RunMetrics:
    """Read a run folder (metrics.jsonl and config.yaml); a run that has not logged yet is empty, not an error."""
    run_dir = Path(run_dir)
    return RunMetrics.from_events(read_metrics(run_dir / "metrics.jsonl"), name=run_dir.name, run_dir=run_dir,
                                  config=read_config(run_dir))


def read_config(run_dir: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


