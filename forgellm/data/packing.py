"""Staging tokenised documents on disk, then packing them into fixed-length sequences.

Documents are appended to flat files as they are tokenised (so memory stays flat however
large the corpus is); once cleaning has decided which documents are kept and on which
side of the split, they are read back (blocks of consecutive documents, one read each) and
packed into the ``.npy`` arrays the trainer memory-maps (`TokenSequences`), written front
to back in blocks.

- CPT (`pack_stream`): documents back to back, each ending with EOS, cut every
  ``max_seq_length`` tokens: only the last sequence of a split holds padding.
- IFT (`pack_records`): whole records, never split (a reply cut from its prompt would
  teach nothing), placed by best-fit decreasing into sequences; the rest of a sequence is
  padding with mask 0, reported as ``padding_fraction``.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Tokens gathered before a block of whole sequences is written.
BLOCK_TOKENS = 1 << 20


class Staging:
    """Append-only token (and mask) files of tokenised documents, with their lengths."""

    def __init__(self, folder: Path, *, with_mask: bool):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.with_mask = with_mask
        self._tokens = open(folder / "staged.tokens", "wb")
        self._mask = open(folder / "staged.mask", "wb") if with_mask else None
        self._lengths = array("q")  # machine integers: 8 bytes a document, not a Python int each

    def add(self, ids: np.ndarray, mask: np.ndarray | None = None) -> int:
        """Stage one document; returns its index."""
        self._tokens.write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
        if self._mask is not None:
            self._mask.write(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
        self._lengths.append(len(ids))
        return len(self._lengths) - 1

    def add_many(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Stage documents given back to back in ``flat`` (no masks), with their ``lengths``."""
        self._tokens.write(np.ascontiguousarray(flat, dtype=np.int32).tobytes())
        self._lengths.extend(lengths.tolist())

    def __len__(self) -> int:
        return len(self._lengths)

    def close(self) -> StagedDocs:
        self._tokens.close()
        if self._mask is not None:
            self._mask.close()
        mask_path = self.folder / "staged.mask" if self.with_mask else None
        return StagedDocs(self.folder / "staged.tokens", mask_path, np.frombuffer(self._lengths, dtype=np.int64))


class StagedDocs:
    """Read access to staged documents by index. Documents are read with plain file reads, not
    memory-mapped: mapped pages would count in the process's memory for as long as it runs."""

    def __init__(self, tokens_path: Path, mask_path: Path | None, lengths: np.ndarray):
        self.lengths = lengths
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._tokens = open(tokens_path, "rb")
        self._mask = open(mask_path, "rb") if mask_path is not None else None

    def doc(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        start, length = int(self.offsets[i]), int(self.lengths[i])
        self._tokens.seek(start * 4)
        ids = np.fromfile(self._tokens, dtype=np.int32, count=length)
        if self._mask is None:
            return ids, None
        self._mask.seek(start)
        return ids, np.fromfile(self._mask, dtype=np.uint8, count=length)

    def span(self, first: int, last: int) -> np.ndarray:
        """The tokens of documents ``first`` to ``last - 1``, back to back, in one read."""
        self._tokens.seek(int(self.offsets[first]) * 4)
        return np.fromfile(self._tokens, dtype=np.int32, count=int(self.offsets[last] - self.offsets[first]))

    def chosen_tokens(self, chosen: np.ndarray, block_tokens: int) -> Iterator[np.ndarray]:
        """The tokens of the ``chosen`` documents (sorted indices), back to back, in blocks: each block
        is read in one read of about ``block_tokens`` tokens, those of unchosen documents dropped."""
        if len(chosen) == 0:
            return
        selected = np.zeros(len(self.lengths), dtype=bool)
        selected[chosen] = True
        first, end = int(chosen[0]), int(chosen[-1]) + 1
        while first < end:
            last = int(np.searchsorted(self.offsets, self.offsets[first] + block_tokens, side="right")) - 1
            last = min(max(last, first + 1), end)
            yield self.span(first, last)[np.repeat(selected[first:last], self.lengths[first:last])]
            first = last

    def close(self) -> None:
        self._tokens.close()
        if self._mask is not None:
            self._mask.close()


@dataclass
class Packed:
    """What packing wrote: ``rows`` sequences, of which ``target_tokens`` positions count in the loss."""

    rows: int
    target_tokens: int


class SplitWriter:
    """Writes ``<split>.tokens.npy`` and ``<split>.mask.npy`` block by block, front to back."""

    def __init__(self, folder: Path, split: str, rows: int, seq_length: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.seq_length, self.rows, self.written, self.target_tokens = seq_length, rows, 0, 0
        self._files = []
        for kind, dtype in (("tokens", np.int32), ("mask", np.uint8)):
            fh = open(folder / f"{split}.{kind}.npy", "wb")
            np.lib.format.write_array_header_1_0(
                fh,
                {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": (rows, seq_length),
                },
            )
            self._files.append(fh)

    def write(self, tokens: np.ndarray, mask: np.ndarray) -> None:
        """Append whole sequences (flat arrays, a multiple of ``seq_length`` long)."""
        self._files[0].write(np.ascontiguousarray(tokens, dtype=np.int32).tobytes())
        self._files[1].write(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
        self.written += len(tokens) // self.seq_length
        self.target_tokens += int(mask.reshape(-1, self.seq_length)[:, 1:].sum(dtype=np.int64))

    def close(self) -> Packed:
        for fh in self._files:
            fh.close()
        if self.written != self.rows:
            raise RuntimeError(f"packed {self.written} sequences, announced {self.rows}")
        return Packed(self.rows, self.target_tokens)


def pack_stream(
    docs: StagedDocs, chosen: np.ndarray, folder: Path, split: str, *, seq_length: int, pad_id: int
) -> Packed:
    """Pack the ``chosen`` documents (indices, in order) back to back into ``split``."""
    total = int(docs.lengths[chosen].sum())
    out = SplitWriter(folder, split, -(-total // seq_length), seq_length)
    carry = np.zeros(0, dtype=np.int32)  # the start of a sequence the next block completes
    for block in docs.chosen_tokens(chosen, BLOCK_TOKENS):
        flat = np.concatenate([carry, block])
        whole = len(flat) // seq_length * seq_length
        if whole:
            out.write(flat[:whole], np.ones(whole, dtype=np.uint8))
        carry = flat[whole:]
    if len(carry):
        padding = seq_length - len(carry)
        out.write(
            np.concatenate([carry, np.full(padding, pad_id, dtype=np.int32)]),
            np.concatenate([np.ones(len(carry), dtype=np.uint8), np.zeros(padding, dtype=np.uint8)]),
        )
    return out.close()


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


def pack_records(
    docs: StagedDocs, chosen: np.ndarray, folder: Path, split: str, *, seq_length: int, pad_id: int
) -> Packed:
    """Pack whole records (each at most ``seq_length`` tokens) into ``split`` by best fit."""
    rows = best_fit_rows(docs.lengths[chosen], seq_length)
    out = SplitWriter(folder, split, len(rows), seq_length)
    for members in rows:
        tokens = np.full(seq_length, pad_id, dtype=np.int32)
        mask = np.zeros(seq_length, dtype=np.uint8)
        cursor = 0
        for member in sorted(members):  # keep the original order inside a row
            ids, record_mask = docs.doc(int(chosen[member]))
            tokens[cursor : cursor + len(ids)] = ids
            mask[cursor : cursor + len(ids)] = 1 if record_mask is None else record_mask
            cursor += len(ids)
        out.write(tokens, mask)
    return out.close()


def padding_fraction(rows: int, seq_length: int, *, real_tokens: int) -> float:
    """Share of all sequence positions that hold no document token."""
    positions = rows * seq_length
    return 0.0 if positions == 0 else 1 - real_tokens / positions
