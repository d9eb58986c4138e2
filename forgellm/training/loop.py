"""THE training loop, written once for every engine.

    for each optimizer step:
        lr = schedule(step)
        for each of grad_accumulation_steps micro-batches: forward + backward (grads accumulate)
        clip, AdamW step
        every steps_per_eval: validation loss (and QA accuracy with eval_qa) -> overfitting / early stopping
        every save_every: checkpoint (atomic), keep the last N plus the best (by best_metric)

The length is max_iterations steps, or num_epochs passes over the training split turned into
steps (`forgellm.training.length`); the start event records both.

Everything the loop reports goes out as events (dicts) to callbacks: the metrics file,
the progress display, status.json, TensorBoard. A stop request (SIGINT/SIGTERM) is
honoured between steps: checkpoint, ``done`` event with status ``stopped``, return.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from forgellm.data.sequences import PreferencePairs, TokenSequences
from forgellm.errors import ForgeError, UserError
from forgellm.runs.events import Event, make_event
from forgellm.training.checkpoints import CheckpointStore
from forgellm.training.config import TrainingConfig
from forgellm.training.distributed import SINGLE, Group, rank_batches, reshard_position
from forgellm.training.engine_api import Trainable
from forgellm.training.length import training_length
from forgellm.training.preference import PreferenceObjective, TokenObjective, named_means, objective_for
from forgellm.training.schedule import learning_rate

if TYPE_CHECKING:
    from forgellm.training.qa import QASet

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]


class TrainingDiverged(ForgeError):
    """The loss or the gradient became NaN/inf; the last good checkpoint is kept."""

    kind = "training_diverged"


@dataclass
class LoopState:
    """What a checkpoint must hold, beyond the weights, to continue exactly where it stopped."""

    step: int = 0  # optimizer steps done
    data_position: int = 0  # micro-batches consumed since the start (epochs included)
    trained_tokens: int = 0
    elapsed: float = 0.0  # seconds spent in training steps
    best_val_loss: float | None = None
    best_step: int | None = None
    gap_at_best: float | None = None  # val - train at the best evaluation
    overfit_evals: int = 0  # consecutive evaluations that looked like overfitting
    recent_train_losses: list[float] = field(default_factory=list)  # since the last eval
    val_loss: float | None = None  # latest evaluation
    val_step: int | None = None
    qa_accuracy: float | None = None  # latest QA evaluation (eval_qa)
    qa_step: int | None = None
    world_size: int = 1  # workers that trained it
    batch_rows: int = 0  # sequences per global micro-batch (batch_size x world_size); data_position counts these


class MicroBatches:
    """Micro-batches in a seeded random order, reshuffled every epoch, resumable by position."""

    def __init__(
        self,
        data: TokenSequences | PreferencePairs,
        batch_size: int,
        seed: int,
        position: int = 0,
        shard: tuple[int, int] = (0, 1),
    ):
        self.data, self.batch_size, self.seed, self.shard = data, batch_size, seed, shard
        self.per_epoch = len(data) // (batch_size * shard[1])
        if self.per_epoch == 0:
            raise UserError(
                f"the training split has {len(data)} sequences, fewer than batch_size={batch_size}: "
                f"lower batch_size or max_seq_length, or add data"
            )
        self.position = position

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.data))

    def __iter__(self) -> Iterator[Any]:  # (tokens, mask) batches, or PairBatch: what the objective reads
        while True:
            epoch, start = divmod(self.position, self.per_epoch)
            for batch in self.data.batches(self.batch_size, order=self.order(epoch), start=start, shard=self.shard):
                self.position += 1
                yield batch


def evaluate(
    trainable: Trainable, data: TokenSequences, batch_size: int, max_batches: int, group: Group = SINGLE
) -> float:
    """Mean cross-entropy over the target tokens of the first ``max_batches`` batches (-1: all)."""
    return evaluate_objective(TokenObjective(), trainable, data, batch_size, max_batches, group)[0]


def evaluate_objective(
    objective: TokenObjective | PreferenceObjective,
    trainable: Trainable,
    data: Any,
    batch_size: int,
    max_batches: int,
    group: Group = SINGLE,
) -> tuple[float, dict[str, float]]:
    """(mean loss per unit, the objective's metrics as means) over the first ``max_batches`` batches (-1: all).

    The last batch may be short: every validation sequence counts, so a validation split smaller
    than ``batch_size`` still evaluates. With several workers a batch is global (``batch_size``
    rows per worker): batch ``i`` is evaluated by rank ``i % world_size`` and the sums are added
    up, so every rank gets the number one process with the same global batch would get."""
    sums, count = np.zeros(1 + len(objective.metrics)), 0
    batches = -(-len(data) // batch_size)
    if max_batches >= 0:
        batches = min(batches, max_batches * group.world_size)
    for i in rank_batches(batches, group, trainable):
        values, n = objective.evaluate(trainable, data, slice((i or 0) * batch_size, ((i or 0) + 1) * batch_size))
        if i is not None:  # None: a padding forward of a sharded model (`rank_batches`)
            sums, count = sums + values, count + n
    *summed, total = group.sum([*map(float, sums), count])
    if total == 0:
        raise UserError(
            "the validation split has no target tokens; raise validation_split, add data, "
            "or name a folder of validation documents with validation_dir"
        )
    return summed[0] / total, named_means(objective, np.asarray(summed), total)


class StopFlag:
    """Set from a signal handler; the loop checks it between steps."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        self.reason = reason

    def __bool__(self) -> bool:
        return self.reason is not None


def train(
    trainable: Trainable,
    config: TrainingConfig,
    train_data: TokenSequences | PreferencePairs,
    val_data: TokenSequences | PreferencePairs,
    store: CheckpointStore,
    callbacks: list[Callback],
    *,
    state: LoopState | None = None,
    stop: StopFlag | None = None,
    group: Group = SINGLE,
    finish: Callable[[], None] | None = None,
    changed: dict[str, Any] | None = None,
    qa: QASet | None = None,
) -> LoopState:
    """Train for ``config.max_iterations`` steps or ``config.num_epochs`` epochs, until early stopping,
    a stop request or divergence. With ``qa`` every evaluation also answers its questions greedily
    (every rank answers them all, so no collective is needed; rank 0 reports).

    With a distributed ``group`` every rank runs this loop on its own shard of each global
    batch; only rank 0 emits events and writes checkpoints. Every decision (stop, early stop,
    divergence) is taken on summed numbers, so all ranks take it at the same step.

    ``finish`` runs on every rank after the last checkpoint and before the ``done`` event (the
    final weights: a run is only ``done`` once they exist); ``changed`` goes into the ``resume``
    event (the configuration keys this resume changed, ``{key: [before, after]}``)."""
    stop = stop if stop is not None else StopFlag()
    objective = objective_for(config)
    resumed = state is not None
    state = state or LoopState()
    rank, world_size = group.rank, group.world_size
    is_main = rank == 0

    def emit(event: Event, **values: Any) -> None:
        if is_main:
            record = make_event(event, state.step, **values)
            for callback in callbacks:
                callback(record)

    saved_step = state.step if resumed else -1

    def save_checkpoint() -> None:
        nonlocal saved_step
        saved_step = state.step
        if not is_main:
            if getattr(trainable, "collective_save", False):
                # this rank's part in gathering sharded weights: FsdpTrainable's save takes None
                trainable.save_checkpoint(None)  # type: ignore[arg-type]
            return
        val = state.val_loss if state.val_step == state.step else None
        qa_accuracy = state.qa_accuracy if state.qa_step == state.step else None
        snapshot = {
            **asdict(state),
            "val_loss": val,
            "qa_accuracy": qa_accuracy,
            "engine": trainable.engine,
            "fine_tune_type": config.fine_tune_type,
            "time": time.time(),
        }
        path = store.save(state.step, snapshot, trainable.save_checkpoint)
        emit(
            Event.CHECKPOINT,
            path=str(path.relative_to(store.run_dir)),
            val_loss=val,
            **({"qa_accuracy": qa_accuracy} if qa_accuracy is not None else {}),
        )

    def run_eval() -> bool:
        """Evaluate; record overfitting; return True when early stopping should end the run."""
        val, val_metrics = evaluate_objective(
            objective, trainable, val_data, config.batch_size, config.val_batches, group
        )
        train_loss = float(np.mean(state.recent_train_losses)) if state.recent_train_losses else None
        state.recent_train_losses = []
        state.val_loss, state.val_step = val, state.step
        scores: dict[str, Any] = {}
        if qa is not None:
            result = qa.answer(partial(trainable.generate_greedy, stop_ids=qa.stop_ids), config.eval_qa_max_tokens)
            state.qa_accuracy, state.qa_step = result.accuracy, state.step
            scores = {"qa_accuracy": result.accuracy, "qa_correct": result.correct, "qa_total": result.total}
            if by_file := result.by_file():
                scores["qa_files"] = by_file
        perplexity = {"val_ppl": _ppl(val)} if isinstance(objective, TokenObjective) else {}
        emit(
            Event.EVAL,
            val_loss=val,
            **perplexity,
            train_loss=train_loss,
            **{f"val_{name}": value for name, value in val_metrics.items()},
            **scores,
        )
        if not math.isfinite(val):
            raise TrainingDiverged(f"validation loss is {val} at step {state.step}")
        gap = val - train_loss if train_loss is not None else None
        if state.best_val_loss is None or val < state.best_val_loss:
            state.best_val_loss, state.best_step, state.gap_at_best = val, state.step, gap
            state.overfit_evals = 0
            return False
        reason = _overfitting_reason(val, gap, state, config.overfitting_threshold)
        if reason is None:
            state.overfit_evals = 0
            return False
        state.overfit_evals += 1
        emit(Event.OVERFITTING, reason=reason, val_loss=val, best_val_loss=state.best_val_loss)
        if config.early_stopping_patience and state.overfit_evals >= config.early_stopping_patience:
            emit(
                Event.EARLY_STOP,
                reason=f"{state.overfit_evals} evaluations in a row overfitting ({reason})",
                best_step=state.best_step,
            )
            return True
        return False

    rows = config.batch_size * world_size
    state.data_position = reshard_position(state.data_position, len(train_data), state.batch_rows, rows)
    state.world_size, state.batch_rows = world_size, rows
    stream = MicroBatches(train_data, config.batch_size, config.seed, state.data_position, shard=(rank, world_size))
    batches = iter(stream)
    length = training_length(config, len(train_data), world_size)
    total = length.max_iterations
    opening = {"changed": changed or {}} if resumed else {}
    emit(
        Event.RESUME if resumed else Event.START,
        **opening,
        total_steps=total,
        num_epochs=length.num_epochs,
        steps_per_epoch=round(length.steps_per_epoch, 4),
        train_sequences=length.sequences,
        best_metric=config.best_metric,
        run_name=store.run_dir.name,
        training_type=config.training_type,
        fine_tune_type=config.fine_tune_type,
        engine=trainable.engine,
        model=config.model_name,
        trainable_params=trainable.trainable_params,
        total_params=trainable.total_params,
        world_size=world_size,
        global_batch_size=config.batch_size * config.grad_accumulation_steps * world_size,
    )
    if not resumed:
        run_eval()  # the starting point of the validation curve
    status, early = "completed", False
    report_losses: list[float] = []
    report_tokens, report_time = 0, 0.0
    report_sums, report_units = np.zeros(1 + len(objective.metrics)), 0
    last_loss: float | None = None
    while state.step < total:
        tic = time.perf_counter()
        micro = [next(batches) for _ in range(config.grad_accumulation_steps)]
        # units: what the loss is a mean over (target tokens; preference pairs); targets: tokens trained on
        units = sum(objective.units(b) for b in micro)
        targets = sum(objective.tokens(b) for b in micro)
        all_units, all_targets, stop_votes = group.sum([units, targets, 1.0 if stop else 0.0])  # any rank stopping
        if stop_votes:
            if not stop:
                stop.set("another worker stopped")
            status = "stopped"
            break
        targets, units = int(all_targets), int(all_units)
        lr = learning_rate(
            state.step,
            peak=config.learning_rate,
            total_steps=total,
            warmup_steps=config.warmup_steps,
            schedule=config.lr_schedule,
            min_ratio=config.min_lr_ratio,
        )
        trainable.reseed(config.seed * 1_000_003 + state.step)
        sums = np.zeros(1 + len(objective.metrics))
        for batch in micro:
            sums += objective.backward(trainable, batch, 1.0 / max(units, 1))
        if world_size > 1:
            trainable.sum_gradients(group)
            sums = np.asarray(group.sum([*map(float, sums)]))
        loss = float(sums[0]) / max(units, 1)
        grad_norm = trainable.optimizer_step(lr, config.max_grad_norm)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise TrainingDiverged(
                f"the loss became {loss} (gradient norm {grad_norm}) at step {state.step + 1}; "
                f"lower learning_rate or raise warmup_steps"
            )
        step_time = time.perf_counter() - tic
        state.step += 1
        state.data_position = stream.position
        state.trained_tokens += targets
        state.elapsed += step_time
        state.recent_train_losses.append(loss)
        last_loss = loss
        report_losses.append(loss)
        report_tokens += targets
        report_time += step_time
        report_sums, report_units = report_sums + sums, report_units + units
        if state.step % config.steps_per_report == 0 or state.step == total:
            emit(
                Event.TRAIN,
                loss=float(np.mean(report_losses)),
                learning_rate=lr,
                tokens=report_tokens,
                trained_tokens=state.trained_tokens,
                tokens_per_second=report_tokens / max(report_time, 1e-9),
                grad_norm=grad_norm,
                peak_memory_gb=trainable.peak_memory_bytes() / 1e9,
                elapsed=state.elapsed,
                world_size=world_size,
                epoch=length.epoch_at(state.step),
                **named_means(objective, report_sums, report_units),
            )
            report_losses, report_tokens, report_time = [], 0, 0.0
            report_sums, report_units = np.zeros_like(report_sums), 0
        if state.step % config.steps_per_eval == 0 or state.step == total:
            early = run_eval()
        if state.step % config.save_every == 0 or state.step == total or early:
            save_checkpoint()
        if early:
            break
    if status == "stopped" and saved_step != state.step:  # decided alike on every rank
        save_checkpoint()
    if finish is not None:
        finish()
    best = store.best()
    emit(
        Event.DONE,
        status=status,
        best_checkpoint=best["checkpoint"] if best else None,
        best_val_loss=state.best_val_loss,
        best_metric=config.best_metric,
        best_value=best.get(config.best_metric) if best else None,
        final_loss=last_loss,
        early_stopped=early,
    )
    return state


def _overfitting_reason(val: float, gap: float | None, state: LoopState, threshold: float) -> str | None:
    best = state.best_val_loss or 0.0
    rise = (val - best) / best if best > 0 else 0.0
    if rise > threshold:
        return f"validation loss {val:.4f} is {rise:.1%} above its best {best:.4f} (threshold {threshold:.1%})"
    if gap is not None and state.gap_at_best is not None and best > 0:
        widening = (gap - state.gap_at_best) / best
        if widening > threshold:
            return (
                f"validation-train gap widened from {state.gap_at_best:.4f} to {gap:.4f} "
                f"({widening:.1%} of the best validation loss, threshold {threshold:.1%})"
            )
    return None


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))
