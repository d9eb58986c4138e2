"""Shared pieces of the training tests: learnable token data and a prepared-data workspace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from forgellm.data.sequences import PreferencePairs, TokenSequences


def patterned_sequences(
    count: int,
    length: int,
    *,
    seed: int = 0,
    period: int = 8,
    vocab: int = 49152,
    mask_prefix: int = 0,
    pattern: np.ndarray | None = None,
) -> TokenSequences:
    """Sequences that repeat a short random pattern (from a random offset): a tiny model learns them fast.

    ``mask_prefix`` masks the first tokens of every sequence out of the loss, like an IFT prompt.
    ``pattern`` gives the tokens to repeat instead of drawing ``period`` of them.
    """
    rng = np.random.default_rng(seed)
    if pattern is None:
        pattern = rng.integers(100, vocab, size=period)
    starts = rng.integers(0, len(pattern), size=count)
    tokens = np.stack([np.resize(np.roll(pattern, -s), length) for s in starts]).astype(np.int32)
    mask = np.ones_like(tokens, dtype=np.uint8)
    mask[:, :mask_prefix] = 0
    return TokenSequences(tokens, mask)


def prepared_data(
    folder: Path, *, train: int = 32, val: int = 8, length: int = 32, seed: int = 0, vocab: int = 49152
) -> Path:
    """A folder of prepared splits (what the data pipeline writes), usable as ``input_dir``."""
    patterned_sequences(train, length, seed=seed, vocab=vocab).save(folder, "train")
    patterned_sequences(val, length, seed=seed + 1, vocab=vocab).save(folder, "val")
    return folder


def write_config(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def tiny_config_values(model_dir: Path, **overrides) -> dict:
    """A config that trains the tiny model in seconds on `prepared_data`."""
    values = dict(
        model_name=str(model_dir),
        input_dir="prepared",
        max_seq_length=32,
        batch_size=4,
        learning_rate=5e-3,
        warmup_steps=2,
        max_iterations=20,
        steps_per_eval=5,
        save_every=5,
        val_batches=2,
        lora_rank=4,
        lora_alpha=8.0,
        seed=0,
        engine="torch",
    )
    values.update(overrides)
    return values


def preference_pairs(
    count: int, length: int, *, seed: int = 0, prompt: int = 6, vocab: int = 2000, pattern_seed: int = 99
) -> PreferencePairs:
    """Pairs whose chosen response follows one fixed pattern and whose rejected response is random
    tokens: a tiny model learns to prefer the pattern, on held-out pairs too."""
    rng = np.random.default_rng(seed)
    pattern = np.random.default_rng(pattern_seed).integers(100, vocab, size=8)
    tokens = np.zeros((count, 2, length), dtype=np.int32)
    mask = np.zeros((count, 2, length), dtype=np.uint8)
    for i in range(count):
        tokens[i, :, :prompt] = rng.integers(100, vocab, size=prompt)
        response = int(rng.integers(6, length - prompt + 1))
        start = int(rng.integers(0, len(pattern)))
        tokens[i, 0, prompt : prompt + response] = np.resize(np.roll(pattern, -start), response)
        tokens[i, 1, prompt : prompt + response] = rng.integers(100, vocab, size=response)
        mask[i, :, prompt : prompt + response] = 1
    return PreferencePairs(tokens, mask)
