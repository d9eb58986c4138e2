"""One training run, start to end: resolve the model, prepare the data, set up the run folder,
build the engine's trainable, run the loop, leave ``final/`` and a status behind.

This is what ``forgellm train`` calls; the CLI process is the training process.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

import yaml

from forgellm.data.sequences import PreferencePairs, TokenSequences, load_prepared
from forgellm.errors import ConflictError, NotFoundError, UserError
from forgellm.models.resolve import ModelInfo, resolve, resolve_adapter
from forgellm.runs.checkpoints import resume_point, write_manifest
from forgellm.runs.events import Event, make_event
from forgellm.runs.layout import (
    CONFIG_FILE,
    DATA_STATS_FILE,
    FINAL_DIR,
    FINAL_STAGING_DIR,
    LOCK_FILE,
    LOG_FILE,
    METRICS_FILE,
    RUN_MARKER,
    STATUS_FILE,
    find_run,
    is_run,
    read_config,
    run_kind,
)
from forgellm.runs.lock import RunLock
from forgellm.training.callbacks import MetricsFile, MLflow, Progress, StatusFile, TensorBoard, check_mlflow_store
from forgellm.training.checkpoints import CheckpointStore, read_state
from forgellm.training.config import TrainingConfig, validate_config
from forgellm.training.distributed import Group, ignore_stop_signals, init_group, lost_worker_error
from forgellm.training.length import length_config, prepare_with_copies, training_length
from forgellm.training.loop import LoopState, StopFlag, train
from forgellm.training.preference import check_data, reference_key, reference_logps
from forgellm.training.qa import QASet, read_qa
from forgellm.training.storage import StorageError, as_os_error, storage_error
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

STUCK_COLLECTIVE_SECONDS = 10.0  # before rank 0 records a lost worker itself (`_record_if_stuck`)


@dataclass
class RunResult:
    run_dir: Path
    status: str  # completed | stopped
    state: LoopState
    is_main: bool = True  # False on the other ranks of a distributed run


def default_run_name(config: TrainingConfig, model: ModelInfo) -> str:
    model_part = re.sub(r"[^A-Za-z0-9.-]+", "-", model.name.split("/")[-1]).strip("-") or "model"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{model_part}_{config.training_type}_lr{config.learning_rate:g}_bs{config.batch_size}_{stamp}"


def resolve_models(config: TrainingConfig, workspace: Workspace) -> tuple[ModelInfo, ModelInfo | None]:
    """(base model, adapter to keep training or None). A run folder or adapter as ``model_name``
    continues that adapter on its base model; a fused/full model is simply the base."""
    info = resolve(config.model_name, workspace)
    if info.is_adapter or is_run(info.path):
        adapter = resolve_adapter(config.model_name, workspace)
        if not adapter.is_adapter:
            return adapter, None  # a run that saved full weights
        if not adapter.base_model:
            raise UserError(f"adapter {adapter.name} does not name its base model; set model_name to the base model")
        return resolve(adapter.base_model, workspace), adapter
    return info, None


def run_folder(config: TrainingConfig, model: ModelInfo, workspace: Workspace) -> Path:
    parent = (
        workspace.path(config.output_dir) if config.output_dir else workspace.models(run_kind(config.training_type))
    )
    return parent / (config.run_name or default_run_name(config, model))


def prepare_folder(run_dir: Path, *, overwrite: bool) -> RunLock:
    """Create the run folder (or empty it, with ``overwrite``) and take its lock, which the caller
    holds until the run ends. Overwriting a run that a live process trains is refused."""
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise ConflictError(
                f"output folder {run_dir} already exists; pass --resume {run_dir} to continue it, "
                f"--overwrite to replace it, or choose another run_name"
            )
        if not is_run(run_dir):
            raise ConflictError(f"{run_dir} was not created by ForgeLLM (no {RUN_MARKER}); refusing to delete it")
        run_lock = RunLock(run_dir).acquire("overwrite")
        for child in run_dir.iterdir():  # all but the lock we hold
            if child.name == LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        run_lock = RunLock(run_dir).acquire("train")
    (run_dir / RUN_MARKER).write_text("ForgeLLM training run\n")
    return run_lock


def load_data(
    config: TrainingConfig, base: ModelInfo, workspace: Workspace, world_size: int = 1
) -> tuple[TokenSequences | PreferencePairs, TokenSequences | PreferencePairs, dict]:
    """The train/val splits: a folder of prepared splits (``train.tokens.npy`` ...) is used as is,
    anything else goes through the data pipeline. With ``min_iterations_fill: shuffled_copies``
    the data is prepared again with the copies its floor needs (`copies_for`); the stats'
    ``shuffled_copies`` says how many were made."""
    source = workspace.path(config.input_dir)
    if not source.exists():
        raise NotFoundError(
            f"input_dir {config.input_dir!r} not found (looked at {source}); put your documents "
            f"there or set input_dir to your dataset folder"
        )
    prepared_splits = load_prepared(source)
    if prepared_splits is not None:
        train_data, val_data, stats = prepared_splits
        stats["prepared_path"] = str(source)
    else:
        from transformers import AutoTokenizer

        from forgellm.data.pipeline import PreparedData, prepare_dataset
        from forgellm.data.settings import FOLDER_KEYS, DataSettings

        folders = {key: workspace.path(getattr(config, key)) for key in FOLDER_KEYS if getattr(config, key)}
        settings = DataSettings.from_config(
            config, **folders, input_dir=source, replay_model=str(base.path), replay_engine=config.resolved_engine()
        )
        tokenizer = AutoTokenizer.from_pretrained(str(base.path))

        def prepare(copies: int) -> PreparedData:
            if copies != settings.shuffled_copies:
                log.info("data: %d shuffled copies of each document fill min_iterations", copies)
            return prepare_dataset(settings.model_copy(update={"shuffled_copies": copies}), tokenizer, workspace)

        prepared, filled = prepare_with_copies(config, prepare, lambda p: len(p.train), world_size)
        if filled:
            prepared.stats["shuffled_copies"] = {**(prepared.stats.get("shuffled_copies") or {}), "fill": True}
        train_data, val_data, stats = (
            prepared.train,
            prepared.val,
            {**prepared.stats, "prepared_path": str(prepared.path)},
        )
    if train_data.seq_length != config.max_seq_length:
        raise UserError(
            f"the prepared data has sequences of {train_data.seq_length} tokens but max_seq_length is "
            f"{config.max_seq_length}; set max_seq_length: {train_data.seq_length} or prepare it again"
        )
    if len(train_data) < config.batch_size:
        raise UserError(
            f"the training split has {len(train_data)} sequences of {config.max_seq_length} tokens, "
            f"fewer than batch_size={config.batch_size}: lower batch_size or max_seq_length, or add data"
        )
    return train_data, val_data, stats


def check_fits(config: TrainingConfig, base: ModelInfo, vocab_size: int | None) -> None:
    """Refuse a batch that cannot fit before loading anything big."""
    if base.context_length and config.max_seq_length > base.context_length:
        raise UserError(
            f"max_seq_length={config.max_seq_length} is longer than the model's context of "
            f"{base.context_length} tokens; lower max_seq_length"
        )
    if vocab_size:
        import psutil

        # logits, their float copy and their gradient: 3 x (B, L, V) float32 per micro-batch
        need = 3 * config.batch_size * config.max_seq_length * vocab_size * 4
        available = psutil.virtual_memory().available
        if need > available:
            raise UserError(
                f"batch_size={config.batch_size} x max_seq_length={config.max_seq_length} needs about "
                f"{need / 1e9:.1f} GB for the logits alone, {available / 1e9:.1f} GB is free; lower "
                f"batch_size (raise grad_accumulation_steps to keep the effective batch) or max_seq_length"
            )


def _vocab_size(model: ModelInfo) -> int | None:
    try:
        return int(json.loads((model.path / "config.json").read_text())["vocab_size"])
    except (OSError, ValueError, KeyError):
        return None


def _install_stop_handlers(stop: StopFlag) -> dict[signal.Signals, Any]:
    previous: dict[signal.Signals, Any] = {}

    def handler(signum, _frame):
        if stop:  # a second signal: stop now
            raise KeyboardInterrupt
        stop.set(signal.Signals(signum).name)
        log.warning("%s received: saving a checkpoint and stopping", signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def _attach_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("forgellm")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def load_run_config(run_dir: Path, overrides: dict[str, Any] | None = None) -> TrainingConfig:
    config_file = run_dir / CONFIG_FILE
    if not config_file.exists():
        raise NotFoundError(f"{run_dir} has no config.yaml; it is not a training run folder")
    values = yaml.safe_load(config_file.read_text()) or {}
    overrides = overrides or {}
    # The resolved config records both lengths; a new one for either replaces both (the other is derived again).
    for given, derived in (("num_epochs", "max_iterations"), ("max_iterations", "num_epochs")):
        if overrides.get(given) is not None and derived not in overrides:
            values.pop(derived, None)
    if overrides.get("max_iterations") is not None and "num_epochs" not in overrides:
        values.pop("min_iterations", None)  # a floor for epochs: steps given outright replace it
        values.pop("min_iterations_fill", None)  # (the copies it made are recorded in shuffled_copies)
    values.update(overrides)
    return validate_config(values, source=str(config_file), resolved=True)


def write_back_config(run_dir: Path, config: TrainingConfig) -> dict[str, list[Any]]:
    """Make ``config.yaml`` the configuration a resume trains with, so summaries, the model card and
    the next resume see it; the one it replaces is kept as ``config.<n>.yaml``. The changed keys,
    ``{key: [before, after]}``, go into the ``resume`` event."""
    before = read_config(run_dir)
    after = yaml.safe_load(config.to_yaml()) or {}
    changed = {key: [before.get(key), value] for key, value in after.items() if before.get(key) != value}
    if changed:
        n = 1
        while (run_dir / f"config.{n}.yaml").exists():
            n += 1
        shutil.copy2(run_dir / CONFIG_FILE, run_dir / f"config.{n}.yaml")
        tmp = run_dir / f".{CONFIG_FILE}.tmp"
        try:
            tmp.write_text(config.to_yaml())
            os.replace(tmp, run_dir / CONFIG_FILE)
        except OSError:
            tmp.unlink(missing_ok=True)  # config.yaml stays the previous one, whole
            raise
        log.info("resume changed %s; the previous configuration is kept as config.%d.yaml", ", ".join(changed), n)
    return changed


def start_run(
    config: TrainingConfig | None = None,
    *,
    resume: str | None = None,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
    workspace: Workspace | None = None,
    progress_stream=None,
) -> RunResult:
    """Run a training job to its end (completed, stopped by a signal, or early-stopped)."""
    workspace = workspace or Workspace.current()
    if resume:
        run_dir = find_run(resume, workspace)
        config = load_run_config(run_dir, overrides)
    elif config is None:
        raise UserError("pass a config (--config FILE) or --resume RUN_DIR")
    _check_trackers(config, workspace)
    qa_items = read_qa(workspace.path(config.eval_qa)) if config.eval_qa else None  # a bad file stops us here
    base, adapter = resolve_models(config, workspace)
    check_fits(config, base, _vocab_size(base))
    from forgellm.training.engine_api import check_quantization

    check_quantization(config, base)
    group = init_group(config.resolved_engine())  # torchrun / mlx.launch workers join here; alone: no-op
    run_lock: RunLock | None = None  # rank 0 (or the only process) holds it until the run ends
    log_handler = None
    try:
        latest = None
        if resume:
            if group.is_main:
                run_lock = RunLock(run_dir).acquire("resume")
            # before anything is written: the checkpoint to continue from (broken ones skipped, with a warning)
            latest = resume_point(run_dir)
        else:
            if group.world_size > 1 and not config.run_name:  # every rank must agree on one folder
                config = config.model_copy(update={"run_name": group.broadcast_text(default_run_name(config, base))})
            run_dir = run_folder(config, base, workspace)
            if group.is_main:
                run_lock = prepare_folder(run_dir, overwrite=overwrite)
            config = config.model_copy(update={"run_name": run_dir.name})
            if group.is_main:
                (run_dir / CONFIG_FILE).write_text(config.to_yaml())
        log_handler = _attach_log(run_dir) if group.is_main else None
        return _run(
            config,
            run_dir,
            base,
            adapter,
            workspace,
            resume=bool(resume),
            progress_stream=progress_stream,
            group=group,
            latest=latest,
            qa_items=qa_items,
        )
    except OSError as exc:
        raise storage_error(exc) from None
    finally:
        if log_handler is not None:
            logging.getLogger("forgellm").removeHandler(log_handler)
            log_handler.close()
        if run_lock is not None:
            run_lock.release()


def _run(
    config: TrainingConfig,
    run_dir: Path,
    base: ModelInfo,
    adapter: ModelInfo | None,
    workspace: Workspace,
    *,
    resume: bool,
    progress_stream,
    group: Group,
    latest: Path | None,
    qa_items: list[dict] | None = None,
) -> RunResult:
    """Rank 0 (or the only process) writes the run folder; other ranks of a distributed run only train."""
    from forgellm.training.engine_api import create_trainable

    store = CheckpointStore(run_dir, config.max_checkpoints, config.best_metric)
    callbacks: list = []
    closers: list = []
    errors = ErrorRecorder(callbacks)
    try:
        if group.is_main:
            metrics = MetricsFile(run_dir / METRICS_FILE)
            closers.append(metrics.close)
            status_file = StatusFile(run_dir / STATUS_FILE, config.max_iterations, resumed=resume)
            callbacks += [metrics, status_file]
        log.info(
            "run %s: %s %s on %s (%s engine)",
            run_dir,
            config.training_type,
            config.fine_tune_type,
            base.path,
            config.resolved_engine(),
        )
        if not group.is_main:
            group.barrier()  # rank 0 prepares (and caches) the data first
        train_data, val_data, stats = load_data(config, base, workspace, group.world_size)
        if group.is_main:
            group.barrier()
            (run_dir / DATA_STATS_FILE).write_text(json.dumps(stats, indent=2, default=str))
        check_data(config, train_data)
        copies = stats.get("shuffled_copies") or {}
        # a resume keeps the length it resolved when it started
        config = length_config(config, copies.get("copies", 0), bool(copies.get("fill")) and not resume)
        config, changed = _resolve_length(config, len(train_data), group, run_dir, resume=resume)
        assert config.max_iterations is not None  # _resolve_length sets both lengths
        if group.is_main:
            status_file.total_steps = config.max_iterations
        qa = _qa_set(qa_items, base) if qa_items else None
        trainable = create_trainable(config, base, adapter)
        if (
            config.training_type == "preference"
            and config.preference_loss == "dpo"
            and not getattr(trainable, "reference_from_adapter_off", False)
        ):
            # before any checkpoint is loaded: the reference is the model as training starts;
            # training_type preference: the data are pairs
            key = reference_key(config, base.path, adapter.path if adapter else None)
            folder = Path(stats["prepared_path"])
            train_data, val_data = (
                reference_logps(trainable, cast(PreferencePairs, data), folder, split, key, config.batch_size, group)
                for data, split in ((train_data, "train"), (val_data, "val"))
            )
        state = None
        if latest is not None:
            trainable.load_checkpoint(latest)
            saved = read_state(latest)
            state = LoopState(**{f.name: saved[f.name] for f in fields(LoopState) if f.name in saved})
            log.info("resuming from %s (step %d)", latest, state.step)
        if group.is_main:
            callbacks.append(Progress(config.max_iterations, state.step if state else 0, stream=progress_stream))
        if group.is_main:
            for tracker in _trackers(config, run_dir, workspace):
                callbacks.append(tracker)
                closers.append(tracker.close)
        if group.is_main and group.world_size > 1:
            from forgellm.training.distributed_watchdog import on_loss

            on_loss(lambda: _record_if_stuck(errors, group, store))

        def finish() -> None:  # before the done event: a run is done only once final/ exists
            if group.is_main:
                _save_final(trainable, run_dir)
            elif getattr(trainable, "collective_save", False):
                # this rank's part in gathering sharded weights: FsdpTrainable's save takes None
                trainable.save_final(None)  # type: ignore[arg-type]

        stop = StopFlag()
        previous = _install_stop_handlers(stop)
        try:
            state = train(
                trainable,
                config,
                train_data,
                val_data,
                store,
                callbacks,
                state=state,
                stop=stop,
                group=group,
                finish=finish,
                changed=changed,
                qa=qa,
            )
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        group.close()
        return RunResult(run_dir, "stopped" if stop else "completed", state, group.is_main)
    except BaseException as exc:
        if group.world_size > 1:
            ignore_stop_signals()  # the launcher is stopping the workers: let this one record why
        os_error = as_os_error(exc)
        if os_error is not None:
            exc = storage_error(os_error, run_dir, resumable=store.latest() is not None)
        errors.record(str(exc) or type(exc).__name__, _last_step(store))
        if isinstance(exc, StorageError):
            raise exc from None
        raise
    finally:
        for close in closers:
            close()


def _resolve_length(
    config: TrainingConfig, sequences: int, group: Group, run_dir: Path, *, resume: bool
) -> tuple[TrainingConfig, dict[str, list[Any]]]:
    """Both training lengths, one derived from the other and the packed data, and what a resume
    changed. Rank 0 records the resolved configuration in config.yaml, so the run (and a resume
    of it) shows and keeps both; a resume writes it back only now, so a length it re-derives
    (``--set num_epochs=4`` gives new max_iterations) is in config.yaml and in its ``changed``."""
    length = training_length(config, sequences, group.world_size)
    resolved = config.model_copy(update={"max_iterations": length.max_iterations, "num_epochs": length.num_epochs})
    changed: dict[str, list[Any]] = {}
    if group.is_main:
        if resume:
            changed = write_back_config(run_dir, resolved)
        elif resolved != config:
            (run_dir / CONFIG_FILE).write_text(resolved.to_yaml())
    return resolved, changed


def _qa_set(items: list[dict], base: ModelInfo) -> QASet:
    """The eval_qa questions as prompts of the base model's tokenizer, with its end-of-sequence ids."""
    from transformers import AutoTokenizer

    from forgellm.engines.loaded import read_eos_token_ids

    tokenizer = AutoTokenizer.from_pretrained(str(base.path))
    return QASet(items, tokenizer, read_eos_token_ids(base.path, tokenizer))


def _save_final(trainable, run_dir: Path) -> None:
    """``final/``, written beside (its manifest last) and then renamed, so it is always complete."""
    staging, final = run_dir / FINAL_STAGING_DIR, run_dir / FINAL_DIR
    shutil.rmtree(staging, ignore_errors=True)
    try:
        trainable.save_final(staging)
        write_manifest(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.rename(staging, final)


class ErrorRecorder:
    """Writes the run's one ``error`` event (metrics.jsonl and status.json), as far as the disk still
    lets us write; from whichever thread gets there first (see `_record_if_stuck`)."""

    def __init__(self, callbacks: list):
        self.callbacks = callbacks
        self._lock = threading.Lock()
        self._recorded = False

    def record(self, message: str, step: int) -> bool:
        """False when an error was already recorded."""
        with self._lock:
            if self._recorded:
                return False
            self._recorded = True
            log.error("run failed: %s", message)
            record = make_event(Event.ERROR, step, message=message)
            for callback in self.callbacks:
                if isinstance(callback, (MetricsFile, StatusFile)):
                    try:
                        callback(record)
                    except OSError:
                        log.error("could not record the error event: the run folder is not writable")
            return True


def _record_if_stuck(errors: ErrorRecorder, group: Group, store: CheckpointStore) -> None:
    """Rank 0, when the liveness watch saw a worker die: normally the next collective fails and the
    main thread records why. A collective can also wait on a dead peer inside the engine, where no
    signal reaches Python, until the launcher's SIGKILL (torchrun's comes 30 s after its SIGTERM):
    the run would stay "running" for ever. So after a grace period this thread records the error and
    ends the process itself."""
    time.sleep(STUCK_COLLECTIVE_SECONDS)
    stuck = TimeoutError(f"no collective had failed {STUCK_COLLECTIVE_SECONDS:.0f} s after the loss")
    message = str(lost_worker_error(group, stuck))
    if errors.record(message, _last_step(store)):
        print(f"error: {message}", file=sys.stderr, flush=True)  # as the CLI reports a ForgeError
        logging.shutdown()
        os._exit(2)


def _check_trackers(config: TrainingConfig, workspace: Workspace) -> None:
    """Refuse a tracker that cannot work before the run folder exists."""
    import importlib.util

    for name in config.report_to:
        if importlib.util.find_spec(name) is None:
            raise UserError(
                f"report_to: [{name}] needs the {name} package: pip install {name} "
                f"(or drop it from report_to; metrics.jsonl has every metric)"
            )
    if "mlflow" in config.report_to:
        check_mlflow_store(config.mlflow_tracking_uri, workspace.root)


def _trackers(config: TrainingConfig, run_dir: Path, workspace: Workspace) -> list:
    trackers: list = []
    if "tensorboard" in config.report_to:
        trackers.append(TensorBoard(run_dir / "tensorboard"))
    if "mlflow" in config.report_to:
        try:
            trackers.append(MLflow(config.mlflow_tracking_uri, workspace.root, run_dir, config.model_dump()))
        except Exception as exc:  # a server that is down, a corrupt store: say which, in one line
            raise UserError(
                f"mlflow_tracking_uri: cannot log to MLflow ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); fix the URI or drop mlflow "
                f"from report_to"
            ) from None
    return trackers


def _last_step(store: CheckpointStore) -> int:
    latest = store.latest()
    return int(read_state(latest)["step"]) if latest is not None else 0
