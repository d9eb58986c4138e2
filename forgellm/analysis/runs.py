"""A training run read back from its folder: metrics as columns, config, checkpoints.

Analysis, dashboards and the publisher all start here, so they agree on what a run holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.runs.checkpoints import checkpoint_name, read_best, step_checkpoints, step_of
from forgellm.runs.events import OPENINGS, Event, read_events
from forgellm.runs.layout import CHECKPOINTS_DIR, METRICS_FILE, read_config

TRAIN_KEYS = (
    "loss",
    "learning_rate",
    "tokens_per_second",
    "grad_norm",
    "peak_memory_gb",
    "trained_tokens",
    "elapsed",
    "logps_chosen",
)  # preference runs only (NaN elsewhere)
# val_accuracy, val_margin: preference runs; qa_accuracy: runs with eval_qa
EVAL_KEYS = ("val_loss", "val_ppl", "train_loss", "val_accuracy", "val_margin", "qa_accuracy")


@dataclass
class Columns:
    """One event kind as numpy columns; a missing or null value is NaN."""

    step: np.ndarray
    values: dict[str, np.ndarray]

    @classmethod
    def from_events(cls, events: list[dict[str, Any]], keys: tuple[str, ...]) -> Columns:
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


def qa_file_columns(evals: list[dict[str, Any]]) -> dict[str, Columns]:
    """Per QA file (the ``qa_files`` of eval events: ``{file: {correct, total, accuracy}}``), its
    ``accuracy`` at each evaluation that scored it; files in name order. The one reader of the
    per-file scores for every chart (dashboards, Compare, Monitoring)."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for e in evals:
        files = e.get("qa_files")
        for name, score in files.items() if isinstance(files, dict) else ():
            if isinstance(score, dict):
                by_file.setdefault(str(name), []).append({"step": e["step"], "accuracy": score.get("accuracy")})
    return {name: Columns.from_events(by_file[name], ("accuracy",)) for name in sorted(by_file)}


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
    best: dict[str, Any] | None = None  # the trainer's best checkpoint (checkpoints/best.json)
    qa_files: dict[str, Columns] = field(default_factory=dict)  # QA accuracy per file (`qa_file_columns`)

    @classmethod
    def from_events(
        cls,
        events: list[dict[str, Any]],
        *,
        name: str = "run",
        run_dir: Path | None = None,
        config: dict[str, Any] | None = None,
        best: dict[str, Any] | None = None,
    ) -> RunMetrics:
        kinds: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            if isinstance(e.get("step"), (int, float)):
                kinds.setdefault(e["event"], []).append(e)
        evals = Columns.from_events(kinds.get(Event.EVAL, []), EVAL_KEYS)
        qa_files = qa_file_columns(kinds.get(Event.EVAL, []))
        openings = [e for e in events if e.get("event") in OPENINGS]
        return cls(
            name=name,
            train=Columns.from_events(kinds.get(Event.TRAIN, []), TRAIN_KEYS),
            evals=evals,
            checkpoints=_checkpoints(kinds.get(Event.CHECKPOINT, []), evals, run_dir),
            start=openings[-1] if openings else {},  # the latest start or resume: its total_steps holds
            done=kinds[Event.DONE][-1] if kinds.get(Event.DONE) else None,
            notices=[e for k in (Event.OVERFITTING, Event.EARLY_STOP, Event.ERROR) for e in kinds.get(k, [])],
            config=config or {},
            run_dir=run_dir,
            best=best,
            qa_files=qa_files,
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
        name = Path(str(e.get("path") or checkpoint_name(step))).name
        val = e.get("val_loss")
        val = float(val) if isinstance(val, (int, float)) else val_at.get(step)
        found[step] = Checkpoint(step, name, val, exists=run_dir is None or (run_dir / CHECKPOINTS_DIR / name).is_dir())
    if run_dir is not None:
        for folder in step_checkpoints(run_dir):
            step = step_of(folder)
            if step not in found:
                found[step] = Checkpoint(step, folder.name, val_at.get(step), exists=True)
    return [found[s] for s in sorted(found)]


def load_run(run_dir: Path) -> RunMetrics:
    """Read a run folder (metrics.jsonl and config.yaml); a run that has not logged yet is empty, not an error."""
    run_dir = Path(run_dir)
    return RunMetrics.from_events(
        read_events(run_dir / METRICS_FILE),
        name=run_dir.name,
        run_dir=run_dir,
        config=read_config(run_dir),
        best=read_best(run_dir),
    )
