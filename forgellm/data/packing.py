"""Staging tokenised documents on disk, then packing them into fixed-length sequences.

Documents are appended to flat files as they are tokenised (so memory stays flat however
large the corpus is); once cleaning has decided which documents are kept and on which
side of the split, they are packed straight into the memory-mapped ``.npy`` arrays the
trainer reads (`TokenSequences`).

- CPT (`pack_stream`): documents back to back, each ending with EOS, cut every
  ``max_seq_length`` tokens: only the last sequence of a split holds padding.
- IFT (`pack_records`): whole records, never split (a reply cut from its prompt would
  teach nothing), placed by best-fit decreasing into sequences; the rest of a sequence is
  padding with mask 0, reported as ``padding_fraction``.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from forgellm.data.sequences import TokenSequences


class Staging:
    """Append-only token (and mask) files of tokenised documents, with their lengths."""

    def __init__(self, folder: Path, *, with_mask: bool):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.with_mask = with_mask
        self._tokens = open(folder / "staged.tokens", "wb")
        self._mask = open(folder / "staged.mask", "wb") if with_mask else None
        self._lengths: list[int] = []

    def add(self, ids: np.ndarray, mask: np.ndarray | None = None) -> int:
        """Stage one document; returns its index."""
        self._tokens.write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
        if self._mask is not None:
            self._mask.write(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
        self._lengths.append(len(ids))
        return len(self._lengths) - 1

    def __len__(self) -> int:
        return len(self._lengths)

    def close(self) -> "StagedDocs":
        self._tokens.close()
        if self._mask is not None:
            self._mask.close()
        lengths = np.asarray(self._lengths, dtype=np.int64)
        total = int(lengths.sum())
        tokens = (np.memmap(self.folder / "staged.tokens", dtype=np.int32, mode="r", shape=(total,))
                  if total else np.zeros(0, np.int32))
        mask = None
        if self.with_mask and total:
            mask = np.memmap(self.folder / "staged.mask", dtype=np.uint8, mode="r", shape=(total,))
        return StagedDocs(tokens, mask, lengths)


class StagedDocs:
    def __init__(self, tokens: np.ndarray, mask: np.ndarray | None, lengths: np.ndarray):
        self.tokens, self.mask, self.lengths = tokens, mask, lengths
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def doc(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b], None if self.mask is None else self.mask[a:b]


def _allocate(folder: Path, split: str, rows: int, seq_length: int, pad_id: int) -> TokenSequences:
    folder.mkdir(parents=True, exist_ok=True)
    tokens = open_memmap(folder / f"{split}.tokens.npy", mode="w+", dtype=np.int32, shape=(rows, seq_length))
    mask = open_memmap(folder / f"{split}.mask.npy", mode="w+", dtype=np.uint8, shape=(rows, seq_length))
    tokens[:] = pad_id
    mask[:] = 0
    return TokenSequences(tokens, mask)


def _flush(sequences: TokenSequences) -> None:
    for array in (sequences.tokens, sequences.mask):
        if isinstance(array, np.memmap):
            array.flush()


def pack_stream(docs: StagedDocs, chosen: np.ndarray, folder: Path, split: str, *, seq_length: int,
                pad_id: int) -> TokenSequences:
    """Pack the ``chosen`` documents (indices, in order) back to back into ``split``."""
    total = int(docs.lengths[chosen].sum())
    out = _allocate(folder, split, -(-total // seq_length), seq_length, pad_id)
    flat_tokens, flat_mask = out.tokens.reshape(-1), out.mask.reshape(-1)
    cursor = 0
    for i in chosen:
        ids, mask = docs.doc(int(i))
        flat_tokens[cursor:cursor + len(ids)] = ids
        flat_mask[cursor:cursor + len(ids)] = 1 if mask is None else mask
        cursor += len(ids)
    _flush(out)
    return out


def best_fit_rows(lengths: np.ndarray, seq_length: int) -> list[list[int]]:
    """Group item indices into rows of at most ``seq_length`` tokens, longest items first, each
    into the fullest row it still fits (best-fit decreasing). Deterministic."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (free tokens, row index)
    for i in sorted(range(len(lengths)), key=lambda k: (-int(lengths[k]), k)):
        need = int(lengths[i])
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            space, row = free.pop(at)
            rows[row].append(i)
            if space - need > 0:
                bisect.insort(free, (space - need, row))
        else:
            rows.append([i])
            if seq_length - need > 0:
                bisect.insort(free, (seq_length - need, len(rows) - 1))
    return rows


def pack_records(docs: StagedDocs, chosen: np.ndarray, folder: Path, split: str, *, seq_length: int,
                 pad_id: int) -> TokenSequences:
    """Pack whole records (each at most ``seq_length`` tokens) into ``split`` by best fit."""
    rows = best_fit_rows(docs.lengths[chosen], seq_length)
    out = _allocate(folder, split, len(rows), seq_length, pad_id)
    for r, members in enumerate(rows):
        cursor = 0
        for member in sorted(members):  # keep the original order inside a row
            ids, mask = docs.doc(int(chosen[member]))
            out.tokens[r, cursor:cursor + len(ids)] = ids
            out.mask[r, cursor:cursor + len(ids)] = 1 if mask is None else mask
            cursor += len(ids)
    _flush(out)
    return out


def padding_fraction(*splits: TokenSequences, real_tokens: int) -> float:
    """Share of all sequence positions that hold no document token."""
    positions = sum(len(s) * s.seq_length for s in splits)
    return 0.0 if positions == 0 else 1 - real_tokens / positions
