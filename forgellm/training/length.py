"""How long a run trains, in optimizer steps and in epochs: one given, the other derived.

An epoch is one pass over the packed training split. The loop draws micro-batches of
``batch_size`` sequences per worker and drops the remainder of each epoch (`MicroBatches`), so
an epoch holds ``sequences // (batch_size x workers)`` micro-batches and
``that / grad_accumulation_steps`` optimizer steps (not always a whole number).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from forgellm.errors import UserError
from forgellm.training.config import MAX_SHUFFLED_COPIES, TrainingConfig

EPOCH_DIGITS = 3  # epochs are recorded rounded to this many decimals

P = TypeVar("P")  # prepared data: a `PreparedData`, or the stats of one (the web app's estimate)


@dataclass(frozen=True)
class TrainingLength:
    max_iterations: int  # optimizer steps
    num_epochs: float  # passes over the training split those steps make
    steps_per_epoch: float  # optimizer steps in one pass
    sequences: int  # packed training sequences
    effective_batch: int  # sequences per optimizer step: batch_size x grad_accumulation_steps x workers

    def epoch_at(self, step: int) -> float:
        return round(step / self.steps_per_epoch, EPOCH_DIGITS)


def training_length(config: TrainingConfig, sequences: int, world_size: int = 1) -> TrainingLength:
    """The run's length from ``config.max_iterations`` when set (a resolved config keeps its steps),
    else from ``config.num_epochs``: the smallest number of steps that covers that many epochs, and at
    least ``config.min_iterations``."""
    micro_per_epoch = sequences // (config.batch_size * world_size)
    if micro_per_epoch == 0:
        raise UserError(
            f"the training split has {sequences} sequences, fewer than batch_size={config.batch_size} "
            f"x {world_size} worker(s): lower batch_size or max_seq_length, or add data"
        )
    steps_per_epoch = micro_per_epoch / config.grad_accumulation_steps
    asked = _steps_for(config.num_epochs, steps_per_epoch) if config.num_epochs is not None else None
    from_epochs = max(asked, config.min_iterations or 1) if asked is not None else None
    steps = config.max_iterations if config.max_iterations is not None else from_epochs
    if steps is None:  # a validated TrainingConfig always has one; this guards configs built with model_copy
        raise UserError("set max_iterations or num_epochs")
    # The epochs asked for when they give these steps (a resolved config records both), else the
    # steps' share (max_iterations given, or min_iterations raised the steps).
    epochs = (
        config.num_epochs
        if config.num_epochs is not None and asked == steps
        else round(steps / steps_per_epoch, EPOCH_DIGITS)
    )
    return TrainingLength(
        max_iterations=steps,
        num_epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        sequences=sequences,
        effective_batch=config.batch_size * config.grad_accumulation_steps * world_size,
    )


def copies_for(config: TrainingConfig, sequences: int, world_size: int = 1) -> int:
    """The shuffled copies of each document the run trains on (``sequences``: the packed split
    without copies): ``config.shuffled_copies``, or, with ``min_iterations_fill: shuffled_copies``
    and epochs that give fewer steps than ``min_iterations``, as many as make one epoch of the
    documents and their copies reach the floor, so that the floor's steps read each version once
    (`floor_filled` then trains that one epoch); whichever is more. Capped at the most
    ``shuffled_copies`` allows; the floor then adds the remaining steps by repeating."""
    if fills_floor(config, sequences, world_size):
        steps_per_epoch = _steps_per_epoch(config, sequences, world_size)
        needed = min(math.ceil(config.min_iterations / steps_per_epoch) - 1, MAX_SHUFFLED_COPIES)  # type: ignore[operator]
        return max(config.shuffled_copies, needed)
    return config.shuffled_copies


def prepare_with_copies(
    config: TrainingConfig, prepare: Callable[[int], P], size: Callable[[P], int], world_size: int = 1
) -> tuple[P, bool]:
    """The data a run trains on and whether its copies fill the floor (`fills_floor`).

    ``prepare(copies)`` prepares the data with that many shuffled copies of each document and
    ``size`` counts its training sequences. The data is prepared with ``config.shuffled_copies``
    and, when `copies_for` wants more, prepared again with those. The trainer prepares the data
    this way and the web app's estimate counts it this way, so the two cannot disagree."""
    prepared = prepare(config.shuffled_copies)
    sequences = size(prepared)
    copies = copies_for(config, sequences, world_size)
    if copies == config.shuffled_copies:
        return prepared, False
    return prepare(copies), fills_floor(config, sequences, world_size)


def length_config(config: TrainingConfig, copies: int, fill: bool) -> TrainingConfig:
    """The config a run's length is derived from once its data is prepared: ``shuffled_copies``
    the copies made (the data stats' count: none are made of chats, say), and, when those fill the
    floor, one epoch of the documents and their copies in place of the epochs asked for."""
    update: dict[str, object] = {}
    if copies != config.shuffled_copies:  # config.yaml records the copies trained on
        update["shuffled_copies"] = copies
    if fill:  # the floor's steps read each version once
        update.update(num_epochs=1.0, max_iterations=None)
    return config.model_copy(update=update) if update else config


def fills_floor(config: TrainingConfig, sequences: int, world_size: int = 1) -> bool:
    """Whether ``min_iterations_fill: shuffled_copies`` applies: the epochs asked for give fewer
    steps than ``min_iterations``. The run then trains one epoch of the documents and their copies
    (at least ``min_iterations`` steps) instead of ``num_epochs`` of them."""
    if config.min_iterations_fill != "shuffled_copies" or not config.num_epochs or not config.min_iterations:
        return False
    steps_per_epoch = _steps_per_epoch(config, sequences, world_size)
    return steps_per_epoch > 0 and _steps_for(config.num_epochs, steps_per_epoch) < config.min_iterations


def _steps_per_epoch(config: TrainingConfig, sequences: int, world_size: int) -> float:
    return (sequences // (config.batch_size * world_size)) / config.grad_accumulation_steps


def _steps_for(epochs: float, steps_per_epoch: float) -> int:
    """The fewest whole steps that cover ``epochs`` (at least one)."""
    return max(1, math.ceil(epochs * steps_per_epoch - 1e-9))
