"""CPT documents a batch at a time: normalise, filter, fingerprint, tokenise, sign.

`clean_and_encode` is everything done to a batch of raw document texts that does not depend on
the other batches, so it can run anywhere; `BatchRunner` runs it in the calling process for
small inputs, or in worker processes (one per core) for large ones, where the per-document
Python work (normalising, quality filters, hashing) would otherwise hold one core while the
other waits. Batches come back in the order they were submitted, so the result does not
depend on where they ran. Exact duplicates are removed by the caller, across batches.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from forgellm.data.cleaning import content_digest, minhash_signatures, normalize_text, quality_problem
from forgellm.data.split import split_value
from forgellm.data.tokenizing import DocumentEncoder, EncoderSpec
from forgellm.errors import ForgeError

if TYPE_CHECKING:
    from forgellm.data.settings import DataSettings


@dataclass(frozen=True)
class CleaningRules:
    """The settings `clean_and_encode` needs (small and picklable, for worker processes)."""

    quality_filters: bool
    min_chars: int
    min_letter_share: float
    max_repeated_line_share: float
    signatures: bool  # near-dedupe is on: compute MinHash signatures
    seed: int

    @classmethod
    def of(cls, settings: DataSettings) -> CleaningRules:
        return cls(
            settings.quality_filters,
            settings.min_chars,
            settings.min_letter_share,
            settings.max_repeated_line_share,
            settings.near_dedupe_threshold > 0,
            settings.seed,
        )


@dataclass
class EncodedBatch:
    """The documents of a batch that passed the filters, tokenised, and what the filters dropped."""

    tokens: np.ndarray  # int32, the documents back to back, each ending with EOS
    lengths: np.ndarray  # int64, one a document
    digests: list[bytes]  # content fingerprints (exact dedupe)
    split_values: np.ndarray  # float64, one a document (the train/validation split)
    signatures: np.ndarray | None  # (documents, NUM_BINS) MinHash signatures, when near-dedupe is on
    dropped: Counter  # filter reason -> documents dropped

    def select(self, keep: np.ndarray) -> EncodedBatch:
        """The documents where ``keep`` is true (``dropped`` unchanged)."""
        tokens = self.tokens[np.repeat(keep, self.lengths)]
        return EncodedBatch(
            tokens,
            self.lengths[keep],
            [d for d, k in zip(self.digests, keep) if k],
            self.split_values[keep],
            None if self.signatures is None else self.signatures[keep],
            self.dropped,
        )


def clean_and_encode(texts: list[str], rules: CleaningRules, encoder: DocumentEncoder) -> EncodedBatch:
    """Normalise and filter raw document ``texts``, then tokenise and fingerprint the rest."""
    kept: list[str] = []
    dropped: Counter = Counter()
    for text in texts:
        text = normalize_text(text)
        problem = (
            "empty"
            if not text
            else rules.quality_filters
            and quality_problem(
                text,
                min_chars=rules.min_chars,
                min_letter_share=rules.min_letter_share,
                max_repeated_line_share=rules.max_repeated_line_share,
            )
        )
        if problem:
            dropped[problem] += 1
        else:
            kept.append(text)
    digests = [content_digest(text) for text in kept]
    encoded = encoder(kept)
    return EncodedBatch(
        encoded.tokens,
        encoded.lengths,
        digests,
        np.fromiter((split_value(d, rules.seed) for d in digests), dtype=np.float64, count=len(digests)),
        minhash_signatures(encoded.tokens, encoded.lengths) if rules.signatures else None,
        dropped,
    )


#: Inputs smaller than this are processed in the calling process: starting workers costs about a second.
WORKERS_MIN_BYTES = 16 * 2**20

_worker_encoder: DocumentEncoder | None = None  # built once in each worker process


def _start_worker(spec_file: Path) -> None:
    global _worker_encoder
    spec: EncoderSpec = pickle.loads(spec_file.read_bytes())
    _worker_encoder = spec.build(threads=1)


def _run_in_worker(texts: list[str], rules: CleaningRules) -> EncodedBatch:
    assert _worker_encoder is not None, "worker started without an encoder"
    return clean_and_encode(texts, rules, _worker_encoder)


class BatchRunner:
    """Runs `clean_and_encode` on batches in order, in ``processes`` worker processes (0: here).

    At most two batches per worker are in flight, so memory stays bounded however large the
    corpus is. Workers are started with ``spawn`` (safe whatever threads this process runs) and
    build their own copy of ``encoder`` from its spec, which is handed over in a file in
    ``scratch``: passed as an argument (most of a megabyte), it would hold this process until
    each worker had imported its modules.
    """

    def __init__(
        self, rules: CleaningRules, encoder: DocumentEncoder, *, processes: int = 0, scratch: Path | None = None
    ):
        self.rules, self.encoder = rules, encoder
        self._pending: deque[Future] = deque()
        self._pool = None
        self.processes = processes if processes > 0 and encoder.spec is not None else 0
        if self.processes:
            if scratch is None:
                raise ValueError("worker processes need a scratch folder for the encoder's spec")
            spec_file = scratch / "encoder-spec.pickle"
            spec_file.write_bytes(pickle.dumps(encoder.spec))
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(spec_file,),
            )

    def submit(self, texts: list[str]) -> Iterator[EncodedBatch]:
        """Queue a batch; yields the batches that are finished and due, oldest first."""
        if self._pool is None:
            yield clean_and_encode(texts, self.rules, self.encoder)
            return
        self._pending.append(self._pool.submit(_run_in_worker, texts, self.rules))
        while len(self._pending) > 2 * self.processes:
            yield self._next_result()

    def drain(self) -> Iterator[EncodedBatch]:
        """Yields every batch still queued, in order."""
        while self._pending:
            yield self._next_result()

    def _next_result(self) -> EncodedBatch:
        try:
            return self._pending.popleft().result()
        except BrokenProcessPool as exc:
            raise ForgeError(
                "a data worker process ended before finishing its batch (killed, or out of memory; in a script "
                "of your own, the code that calls prepare_dataset must sit under `if __name__ == \"__main__\":`, "
                "because workers are started with spawn); nothing was cached, run it again"
            ) from exc

    def close(self) -> None:
        if self._pool is not None:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
