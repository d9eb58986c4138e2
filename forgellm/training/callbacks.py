"""Consumers of the loop's events: the metrics file, status.json, the terminal, TensorBoard, MLflow.

Each is a callable taking one event dict; the loop does not know which are attached.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from forgellm.errors import UserError
from forgellm.jsonio import write_json_atomic
from forgellm.runs.events import OPENINGS, Event, MetricsWriter
from forgellm.training.qa import describe_qa

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

    def __init__(self, path: Path, total_steps: int | None, *, resumed: bool = False):
        self.path = path
        self.total_steps = total_steps
        self.resumed = resumed
        self.started = False

    def write(self, status: str, step: int, **extra: Any) -> None:
        write_json_atomic(
            self.path,
            {
                "status": status,
                "pid": os.getpid(),
                "step": step,
                "total_steps": self.total_steps,
                "updated": time.time(),
                **extra,
            },
            in_place_on_full_disk=True,
        )

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
                self.bar.set_postfix(
                    loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}", refresh=False
                )
            elif time.time() - self._last_line >= self.every or step == self.total:
                self._last_line = time.time()
                self._line(
                    f"step {step}/{self.total} loss {record['loss']:.4f} lr {record['learning_rate']:.2e} "
                    f"tok/s {record['tokens_per_second']:.0f} eta {self._eta(step)}"
                )
        elif event == Event.EVAL:
            detail = (
                f"val_ppl {record['val_ppl']:.2f}"
                if "val_ppl" in record  # cpt, ift; preference: its accuracy
                else f"val_accuracy {record.get('val_accuracy', float('nan')):.3f} "
                f"val_margin {record.get('val_margin', float('nan')):.3f}"
            )
            self._line(f"step {step}: val_loss {record['val_loss']:.4f} {detail}{describe_qa(record)}")
        elif event in (Event.CHECKPOINT, Event.OVERFITTING, Event.EARLY_STOP, Event.ERROR):
            what = record.get("path") or record.get("reason") or record.get("message")
            self._line(f"step {step}: {event} {what}")
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


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a train or eval event (loss, learning rate, val_loss, any added metric)."""
    if record["event"] not in (Event.TRAIN, Event.EVAL):
        return {}
    return {
        key: float(value)
        for key, value in record.items()
        if key not in ("event", "step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class TensorBoard:
    """Scalars for TensorBoard users (``report_to: [tensorboard]``), as ``train/loss``, ``eval/val_loss``..."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def __call__(self, record: dict[str, Any]) -> None:
        values = _scalars(record)
        for key, value in values.items():
            self.writer.add_scalar(f"{record['event']}/{key}", value, record["step"])
        if values:
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


MLFLOW_EXPERIMENT = "forgellm"
MLFLOW_RUN_FILE = "mlflow_run.json"  # in the run folder: a resumed run goes on logging to the same MLflow run


def mlflow_store(uri: str | None, workspace_root: Path) -> tuple[str, Path | None]:
    """(tracking URI, local folder it writes or None for a server). A bare folder becomes an
    SQLite store inside it: MLflow 3 refuses its old folder store."""
    if uri is None:
        folder = workspace_root / "mlflow"
    elif uri.startswith(("http://", "https://", "databricks")):
        return uri, None
    elif uri.startswith("sqlite:///"):
        return uri, Path(uri.removeprefix("sqlite:///")).parent
    else:
        folder = Path(uri.removeprefix("file://")).expanduser()
        if not folder.is_absolute():
            folder = workspace_root / folder
    return f"sqlite:///{folder / 'mlflow.db'}", folder


def check_mlflow_store(uri: str | None, workspace_root: Path) -> None:
    """Before anything is created: a local store must be a folder we can write."""
    _, folder = mlflow_store(uri, workspace_root)
    if folder is None:
        return
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"mlflow_tracking_uri: cannot write the MLflow store at {folder} ({existing} is not a "
            f"writable folder); set mlflow_tracking_uri to a folder you can write"
        )


class MLflow:
    """One MLflow run per training run: the config as parameters, train/eval numbers per step,
    the resolved ``config.yaml`` and the best checkpoint as artifacts."""

    def __init__(self, uri: str | None, workspace_root: Path, run_dir: Path, params: dict[str, Any]):
        logging.getLogger("alembic").setLevel(logging.WARNING)  # it announces every table it creates
        from mlflow.tracking import MlflowClient

        tracking_uri, folder = mlflow_store(uri, workspace_root)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_dir = run_dir
        self.run_id = self._existing_run() or self._new_run(folder, params)
        self._ended = False

    def _existing_run(self) -> str | None:
        path = self.run_dir / MLFLOW_RUN_FILE
        if not path.exists():
            return None
        run_id = json.loads(path.read_text())["run_id"]
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _new_run(self, folder: Path | None, params: dict[str, Any]) -> str:
        experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # artifacts beside the database, not in whatever folder the process started in
            location = (folder / "artifacts").as_uri() if folder is not None else None
            experiment_id = self.client.create_experiment(MLFLOW_EXPERIMENT, artifact_location=location)
        run = self.client.create_run(
            experiment_id, run_name=self.run_dir.name, tags={"forgellm.run_dir": str(self.run_dir)}
        )
        from mlflow.entities import Param

        # MLflow keeps values as strings of at most 6000 characters.
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        write_json_atomic(
            self.run_dir / MLFLOW_RUN_FILE, {"run_id": run.info.run_id, "tracking_uri": self.client.tracking_uri}
        )
        return run.info.run_id

    def __call__(self, record: dict[str, Any]) -> None:
        values = _scalars(record)
        if values:
            from mlflow.entities import Metric

            stamp = int(record.get("time", time.time()) * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, record["step"]) for k, v in values.items()])
        elif record["event"] == "done":
            self._finish(record)

    def _finish(self, record: dict[str, Any]) -> None:
        config = self.run_dir / "config.yaml"
        if config.exists():
            self.client.log_artifact(self.run_id, str(config))
        best = record.get("best_checkpoint")
        if best and (self.run_dir / "checkpoints" / best).is_dir():
            self.client.log_artifacts(self.run_id, str(self.run_dir / "checkpoints" / best), f"best_checkpoint/{best}")
        self.client.set_terminated(self.run_id, "FINISHED" if record.get("status") == "completed" else "KILLED")
        self._ended = True

    def close(self) -> None:
        if not self._ended:  # the run failed before its done event
            self.client.set_terminated(self.run_id, "FAILED")
