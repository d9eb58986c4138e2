"""The train/validation split: by document, decided by a stable hash of its content.

A document's side depends only on its text and the seed, never on the order of files or
on the other documents, so the same document always lands on the same side and no
document is ever on both.
"""

from __future__ import annotations

import hashlib

import numpy as np


def split_value(digest: bytes, seed: int) -> float:
    """A number in [0, 1) fixed by the document's content digest and the seed."""
    keyed = hashlib.blake2b(digest, digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(keyed, "big") / 2**64


def assign_validation(values: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of validation documents from their `split_value` s.

    A document goes to validation when its value is below ``fraction``. When that leaves
    validation empty but there are two or more documents, the one with the smallest
    value goes there, so a small dataset still gets a validation set. A single document always
    trains (the pipeline then holds out its last packed sequences, see `forgellm.data.validation`).
    """
    if len(values) < 2:
        return np.zeros(len(values), dtype=bool)
    is_val = values < fraction
    if fraction > 0 and not is_val.any() and len(values) >= 2:
        is_val[int(np.argmin(values))] = True
    if is_val.all() and len(values) >= 2:  # never leave training empty
        is_val[int(np.argmax(values))] = False
    return is_val
