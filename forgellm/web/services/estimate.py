"""The Training form's estimate of a run before it starts: its length both ways, the tokens it
trains on and, from the measured speed of earlier runs of the same model and engine, how long
that takes.

Nothing is derived here: the data is counted the way the trainer takes it (a folder of prepared
splits as it is, else prepared by `prepare_with_copies`: the shuffled copies asked for, or as
many as fill ``min_iterations``, counted by ``forgellm data stats``), and the length is the
trainer's own (`length_config`, `training_length`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from forgellm.data.sequences import load_prepared
from forgellm.data.stats import train_rows
from forgellm.training.config import TrainingConfig
from forgellm.training.length import length_config, prepare_with_copies, training_length

#: ``copies -> data stats`` of the run's data with that many shuffled copies of each document.
StatsFor = Callable[[int], dict[str, Any]]


def counted_data(config: TrainingConfig, folder: Path, stats_for: StatsFor) -> tuple[int, int, bool]:
    """The rows a run of ``config`` on ``folder`` trains on, the shuffled copies made of each
    document and whether they fill the floor: a folder of prepared splits as it is (the trainer
    takes it so), else the data stats with the copies `prepare_with_copies` makes."""
    prepared = load_prepared(folder)
    if prepared is not None:
        train, _, stats = prepared
        return len(train), (stats.get("shuffled_copies") or {}).get("copies", 0), False
    stats, fill = prepare_with_copies(config, stats_for, train_rows)
    return train_rows(stats), (stats.get("shuffled_copies") or {}).get("copies", 0), fill


def estimate(config: TrainingConfig, folder: Path, stats_for: StatsFor, speed: dict[str, Any]) -> dict[str, Any]:
    """The run's length and size on ``folder`` (`counted_data`); its duration from ``speed``
    (`measured_speed`)."""
    rows, copies, fill = counted_data(config, folder, stats_for)
    length = training_length(length_config(config, copies, fill), rows)
    train_tokens = length.max_iterations * length.effective_batch * config.max_seq_length
    rate = speed.get("tokens_per_second")
    return {
        "max_iterations": length.max_iterations,
        "num_epochs": length.num_epochs,
        "steps_per_epoch": length.steps_per_epoch,
        "sequences": length.sequences,
        "unit": "pairs" if config.training_type == "preference" else "sequences",
        "effective_batch": length.effective_batch,
        "train_tokens": train_tokens,  # token positions of every micro-batch, padding included
        "shuffled_copies": copies,
        "fills_floor": fill,
        "speed": speed,
        "seconds": train_tokens / rate if rate else None,
    }
