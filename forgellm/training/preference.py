"""Preference tuning in the one training loop: what a step's loss is made of, per objective.

The loop asks an objective how many units a micro-batch normalises by and to run its forward
and backward pass; the engine's `Trainable` does the arithmetic.

- `TokenObjective` (cpt, ift): mean cross-entropy over target tokens, as before.
- `PreferenceObjective` (preference): mean over pairs of the DPO, ORPO or SimPO loss, computed
  from each response's summed log-probability (engines: ``pair_backward`` / ``pair_eval``). It
  also sums, per pair, the metrics users watch (`METRICS`), reported as means in the ``train``
  and ``eval`` events.

The losses (per pair; c = chosen, r = rejected; ``logp`` summed over response tokens, ``avg``
that sum over the response's token count; ``ref`` the reference model's ``logp``):

- dpo:   z = beta * ((logp_c - ref_c) - (logp_r - ref_r)); loss = -(1-eps) log s(z) - eps log s(-z)
         (eps = dpo_label_smoothing, conservative DPO); rewards beta * (logp - ref).
- simpo: z = beta * (avg_c - avg_r) - gamma; loss = -log s(z); rewards beta * avg.
- orpo:  loss = -avg_c - lambda * log s(log_odds), log_odds = (avg_c - avg_r) - (log(1-e^avg_c) -
         log(1-e^avg_r)); rewards lambda * avg (as TRL reports them).

The reference of DPO is the model as training starts: for a new LoRA/DoRA adapter the same weights
with the adapter switched off (computed on the fly, no second model); otherwise (full fine-tuning,
a continued adapter, the mlx engine) computed once before training and stored beside the prepared
data (`reference_logps`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgellm.data.sequences import PairBatch, PreferencePairs, TokenSequences
from forgellm.errors import UserError

if TYPE_CHECKING:
    from forgellm.training.config import TrainingConfig
    from forgellm.training.distributed import Group
    from forgellm.training.engine_api import Trainable

log = logging.getLogger(__name__)

#: Per-pair quantities the engines return, summed over a batch, in this order.
METRICS = ("loss", "reward_chosen", "reward_rejected", "margin", "accuracy", "logps_chosen", "logps_rejected")


@dataclass(frozen=True)
class PreferenceSettings:
    loss: str
    beta: float
    label_smoothing: float
    orpo_lambda: float
    simpo_gamma: float

    @classmethod
    def of(cls, config: TrainingConfig) -> PreferenceSettings | None:
        if config.training_type != "preference":
            return None
        loss = config.preference_loss
        value = config.preference_parameter
        return cls(
            loss=loss,
            beta=value("beta") if loss != "orpo" else 0.0,
            label_smoothing=value("dpo_label_smoothing") if loss == "dpo" else 0.0,
            orpo_lambda=value("orpo_lambda") if loss == "orpo" else 0.0,
            simpo_gamma=value("simpo_gamma") if loss == "simpo" else 0.0,
        )

    @property
    def needs_reference(self) -> bool:
        return self.loss == "dpo"


class TokenObjective:
    """CPT and IFT: the mean cross-entropy of target tokens."""

    metrics: tuple[str, ...] = ()

    @staticmethod
    def units(batch: tuple[np.ndarray, np.ndarray]) -> int:
        return int(batch[1][:, 1:].sum(dtype=np.int64))

    tokens = units

    def backward(self, trainable: Trainable, batch: tuple[np.ndarray, np.ndarray], loss_scale: float) -> np.ndarray:
        loss_sum, _ = trainable.forward_backward(batch[0], batch[1], loss_scale)
        return np.array([loss_sum])

    def evaluate(self, trainable: Trainable, data: TokenSequences, rows: slice) -> tuple[np.ndarray, int]:
        loss_sum, count = trainable.eval_loss(np.asarray(data.tokens[rows]), np.asarray(data.mask[rows]))
        return np.array([loss_sum]), count


class PreferenceObjective:
    """Preference pairs: the mean over pairs of the configured loss, and its metrics."""

    metrics = METRICS[1:]

    @staticmethod
    def units(batch: PairBatch) -> int:
        return len(batch.tokens)

    @staticmethod
    def tokens(batch: PairBatch) -> int:
        return int(batch.mask[:, :, 1:].sum(dtype=np.int64))

    def backward(self, trainable: Trainable, batch: PairBatch, loss_scale: float) -> np.ndarray:
        return trainable.pair_backward(batch, loss_scale)

    def evaluate(self, trainable: Trainable, data: PreferencePairs, rows: slice) -> tuple[np.ndarray, int]:
        batch = data.rows(rows)
        return trainable.pair_eval(batch), len(batch.tokens)


def objective_for(config: TrainingConfig) -> TokenObjective | PreferenceObjective:
    return PreferenceObjective() if config.training_type == "preference" else TokenObjective()


def named_means(
    objective: TokenObjective | PreferenceObjective, sums: np.ndarray, units: float, prefix: str = ""
) -> dict[str, float]:
    """The objective's metrics (everything after the loss in ``sums``) as means per unit."""
    return {f"{prefix}{name}": float(value) / max(units, 1) for name, value in zip(objective.metrics, sums[1:])}


def check_data(config: TrainingConfig, train: Any) -> None:
    """Preference training needs preference pairs, and pairs need preference training."""
    is_pairs = isinstance(train, PreferencePairs)
    if (config.training_type == "preference") != is_pairs:
        found = "preference pairs" if is_pairs else "token sequences (cpt/ift data)"
        raise UserError(
            f"training_type: {config.training_type} cannot train on {found} from input_dir "
            f"{config.input_dir!r}; point input_dir at {'pairs' if not is_pairs else 'cpt/ift data'} "
            f"or set training_type: {'preference' if is_pairs else 'cpt or ift'}"
        )


# --- the stored reference (full fine-tuning, continued adapters, mlx) --------------------------


def reference_key(config: TrainingConfig, base_path: Path, adapter_path: Path | None) -> str:
    """What the stored reference log-probabilities depend on besides the data: the starting weights."""
    parts: list[Any] = [config.resolved_engine()]
    for folder in (base_path, adapter_path):
        if folder is None:
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".json", ".bin"))
        parts.append([str(folder.resolve())] + [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def reference_logps(
    trainable: Trainable, data: PreferencePairs, folder: Path, split: str, key: str, batch_size: int, group: Group
) -> PreferencePairs:
    """``data`` with the reference model's summed log-probabilities of every response: read from
    ``folder/reference-<key>/<split>.npy`` or computed now by the trainable (before any step) and
    written there. With several workers each computes its share of the batches (`rank_batches`),
    the shares are summed (each value comes from one rank, zeros from the others: exact) and rank
    0 writes them; rank 0 alone decides whether they are computed, so all ranks agree."""
    from forgellm.training.distributed import rank_batches

    path = folder / f"reference-{key}" / f"{split}.npy"
    if group.sum([float(group.is_main and not path.exists())])[0]:
        if group.is_main:
            log.info("computing the reference log-probabilities of %d %s pairs", len(data), split)
        values = np.zeros((len(data), 2), dtype=np.float32)
        for i in rank_batches(-(-len(data) // batch_size), group, trainable):
            rows = slice((i or 0) * batch_size, ((i or 0) + 1) * batch_size)
            batch = data.rows(rows)
            n, length = batch.tokens.shape[0], batch.tokens.shape[2]
            computed = trainable.sequence_logps(batch.tokens.reshape(2 * n, length), batch.mask.reshape(2 * n, length))
            if i is not None:  # None: a padding forward of a sharded model
                values[rows] = computed.reshape(n, 2)
        values = np.asarray(group.sum(values.ravel().tolist()), dtype=np.float32).reshape(len(data), 2)
        if group.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_suffix(".tmp.npy")
            np.save(staging, values)
            staging.replace(path)
    group.barrier()
    return data.with_reference(np.load(path))
