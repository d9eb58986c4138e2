"""The contract between the data pipeline and the trainer: packed token sequences.

A split is two arrays of the same shape ``(num_sequences, max_seq_length)``:

- ``tokens`` (int32): token ids; documents are packed back to back with an EOS between
  them, so only the last sequence of a split may hold padding.
- ``mask`` (uint8): ``mask[i, j] == 1`` when token ``j`` of sequence ``i`` is a training
  target, predicted from tokens ``< j``. Padding has 0; in IFT only assistant tokens have 1.

The arrays may be memory-mapped ``.npy`` files, so a split never has to fit in memory.

Preference tuning has its own split type, `PreferencePairs`: ``(num_pairs, 2, max_seq_length)``
arrays, the chosen sequence then the rejected one, each alone in its row (never packed: the loss
compares the two sequences' log-probabilities). `load_split` reads either kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


@dataclass
class TokenSequences:
    tokens: np.ndarray  # (N, L) int32
    mask: np.ndarray  # (N, L) uint8

    def __post_init__(self) -> None:
        if self.tokens.shape != self.mask.shape or self.tokens.ndim != 2:
            raise ValueError(f"tokens {self.tokens.shape} and mask {self.mask.shape} must be equal 2-D shapes")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_length(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def target_tokens(self) -> int:
        """Tokens that count in the loss (real, unmasked targets)."""
        return int(self.mask[:, 1:].sum(dtype=np.int64))

    def save(self, folder: Path, split: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{split}.tokens.npy", np.ascontiguousarray(self.tokens, dtype=np.int32))
        np.save(folder / f"{split}.mask.npy", np.ascontiguousarray(self.mask, dtype=np.uint8))

    @classmethod
    def load(cls, folder: Path, split: str) -> TokenSequences:
        """Memory-map a split saved by `save`."""
        return cls(
            np.load(folder / f"{split}.tokens.npy", mmap_mode="r"), np.load(folder / f"{split}.mask.npy", mmap_mode="r")
        )

    def batches(
        self, batch_size: int, *, order: np.ndarray | None = None, start: int = 0, shard: tuple[int, int] = (0, 1)
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(tokens, mask)`` batches in ``order`` (default: as stored) from batch ``start`` on.

        ``shard=(rank, world_size)`` gives each data-parallel rank its own rows of every
        global batch. A final partial batch is dropped so every step has the same shape.
        """
        rank, world = shard
        order = np.arange(len(self)) if order is None else order
        global_batch = batch_size * world
        for b in range(start, len(order) // global_batch):
            rows = np.sort(order[b * global_batch + rank * batch_size : b * global_batch + (rank + 1) * batch_size])
            yield np.asarray(self.tokens[rows]), np.asarray(self.mask[rows])


class PairBatch(NamedTuple):
    """A micro-batch of preference pairs: tokens and mask (B, 2, L); the reference model's summed
    log-probabilities of each response (B, 2), or None when the engine computes them itself."""

    tokens: np.ndarray
    mask: np.ndarray
    reference: np.ndarray | None


@dataclass
class PreferencePairs:
    tokens: np.ndarray  # (N, 2, L) int32: [:, 0] chosen, [:, 1] rejected
    mask: np.ndarray  # (N, 2, L) uint8: 1 on response tokens
    reference: np.ndarray | None = None  # (N, 2) float32, set by `with_reference`

    def __post_init__(self) -> None:
        if self.tokens.shape != self.mask.shape or self.tokens.ndim != 3 or self.tokens.shape[1] != 2:
            raise ValueError(f"tokens {self.tokens.shape} and mask {self.mask.shape} must be equal (N, 2, L) shapes")

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_length(self) -> int:
        return int(self.tokens.shape[2])

    @property
    def target_tokens(self) -> int:
        return int(self.mask[:, :, 1:].sum(dtype=np.int64))

    def with_reference(self, reference: np.ndarray) -> PreferencePairs:
        if reference.shape != (len(self), 2):
            raise ValueError(f"reference log-probabilities {reference.shape} do not match {len(self)} pairs")
        return PreferencePairs(self.tokens, self.mask, np.asarray(reference, dtype=np.float32))

    def save(self, folder: Path, split: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{split}.tokens.npy", np.ascontiguousarray(self.tokens, dtype=np.int32))
        np.save(folder / f"{split}.mask.npy", np.ascontiguousarray(self.mask, dtype=np.uint8))

    @classmethod
    def load(cls, folder: Path, split: str) -> PreferencePairs:
        return cls(
            np.load(folder / f"{split}.tokens.npy", mmap_mode="r"), np.load(folder / f"{split}.mask.npy", mmap_mode="r")
        )

    def rows(self, rows: np.ndarray | slice) -> PairBatch:
        return PairBatch(
            np.asarray(self.tokens[rows]),
            np.asarray(self.mask[rows]),
            None if self.reference is None else np.asarray(self.reference[rows]),
        )

    def batches(
        self, batch_size: int, *, order: np.ndarray | None = None, start: int = 0, shard: tuple[int, int] = (0, 1)
    ) -> Iterator[PairBatch]:
        """As `TokenSequences.batches`, a pair at a time."""
        rank, world = shard
        order = np.arange(len(self)) if order is None else order
        global_batch = batch_size * world
        for b in range(start, len(order) // global_batch):
            yield self.rows(
                np.sort(order[b * global_batch + rank * batch_size : b * global_batch + (rank + 1) * batch_size])
            )


def load_split(folder: Path, split: str) -> TokenSequences | PreferencePairs:
    """A prepared split of either kind, memory-mapped; preference pairs have 3-D arrays."""
    tokens = np.load(folder / f"{split}.tokens.npy", mmap_mode="r")
    kind = PreferencePairs if tokens.ndim == 3 else TokenSequences
    return kind(tokens, np.load(folder / f"{split}.mask.npy", mmap_mode="r"))


#: The splits of a prepared folder, each as ``<split>.tokens.npy`` and ``<split>.mask.npy``.
PREPARED_SPLITS = ("train", "val")


def is_prepared(folder: Path) -> bool:
    """Whether ``folder`` holds splits prepared before (`load_prepared`), which a run takes as they are."""
    return all((folder / f"{split}.tokens.npy").exists() for split in PREPARED_SPLITS)


def load_prepared(
    folder: Path,
) -> tuple[TokenSequences | PreferencePairs, TokenSequences | PreferencePairs, dict] | None:
    """The train and val splits of a folder prepared before, memory-mapped, with its ``stats.json``
    (``{}`` without one): a run trains on them as they are. None when ``folder`` holds no splits."""
    if not is_prepared(folder):
        return None
    stats_file = folder / "stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    train, val = (load_split(folder, split) for split in PREPARED_SPLITS)
    return train, val, stats


def prepared_stats(folder: Path) -> dict[str, Any] | None:
    """The data stats of a folder of prepared splits, which a run trains on as they are: its
    ``stats.json`` (how the pipeline made them; none for arrays from elsewhere) with the counts of
    the arrays themselves and ``prepared_path``. None when ``folder`` holds no splits."""
    prepared = load_prepared(folder)
    if prepared is None:
        return None
    train, val, stats = prepared
    counts: dict[str, Any] = {"seq_length": train.seq_length}
    if isinstance(train, PreferencePairs):  # a pair is one row, its two sequences one example
        pairs = {"train": len(train), "val": len(val), "total": len(train) + len(val)}
        counts |= {"mode": "preference", "pairs": {**stats.get("pairs", {}), **pairs}}
        counts["sequences"] = {"train": 2 * len(train), "val": 2 * len(val)}
    else:
        counts["sequences"] = {"train": len(train), "val": len(val)}
    return {**stats, **counts, "prepared_path": str(folder)}
