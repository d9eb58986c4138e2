"""Cleaning: normalisation, quality filters, exact and near-duplicate detection.

Near duplicates are found with MinHash over token 5-grams, computed for a whole batch of
documents at once with numpy (one-permutation hashing: one 64-bit hash per shingle, its
top bits pick one of `NUM_BINS` bins, each bin keeps its minimum). Candidate pairs come
from LSH banding and are confirmed by the estimated Jaccard similarity, so the
threshold means what it says.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata

import numpy as np

NUM_BINS = 64  # MinHash signature length; must be a power of two (bins come from the top bits)
SHINGLE = 5  # tokens per shingle
EMPTY = np.uint32(0xFFFFFFFF)  # a bin no shingle fell into
PAIR_CHUNK = 1 << 16  # candidate pairs compared at a time

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_TRAILING_SPACES = re.compile(r"[^\S\n]+\n")  # spaces and tabs before a newline
_BLANK_LINES = re.compile(r"\n{3,}")
_SPACES = re.compile(r"\s+")
_NON_LETTERS = re.compile(r"[\W\d_]+")
_ASCII_SPACES = string.whitespace.encode()
_ASCII_CONTROL = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0D, 0x20), 0x7F])  # _CONTROL's ASCII part, and \r
_ASCII_LETTERS = string.ascii_letters.encode()


def normalize_text(text: str) -> str:
    """NFC, one kind of newline, no control characters or trailing spaces, at most one blank line.

    Indentation and spaces inside lines are kept: they carry meaning in code and tables.
    """
    if text.isascii() and _only_ends_to_tidy(text):  # the common case, without four regex passes
        return text.strip()
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():  # ASCII is already NFC
        text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text).replace("\u00a0", " ")
    text = _TRAILING_SPACES.sub("\n", text + "\n")
    return _BLANK_LINES.sub("\n\n", text).strip()


def _only_ends_to_tidy(text: str) -> bool:
    """True when ASCII ``text`` has no control character, carriage return, trailing space or
    run of blank lines: then only stripping its ends is left to do."""
    raw = text.encode("ascii")
    return (
        len(raw.translate(None, _ASCII_CONTROL)) == len(raw)
        and " \n" not in text
        and "\t\n" not in text
        and "\n\n\n" not in text
    )


def quality_problem(
    text: str, *, min_chars: int, min_letter_share: float, max_repeated_line_share: float
) -> str | None:
    """The name of the first quality filter ``text`` fails, or None when it passes."""
    if len(text) < min_chars:
        return "too_short"
    non_space, letters = _visible_and_letters(text)
    if non_space and letters / non_space < min_letter_share:
        return "low_letter_share"
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) > 1 and 1 - len(set(lines)) / len(lines) > max_repeated_line_share:
        return "repeated_lines"
    return None


def _visible_and_letters(text: str) -> tuple[int, int]:
    """Counts of non-space characters and of letters, without a Python loop per character."""
    if text.isascii():  # the common case: byte-level deletes in C
        visible = text.encode().translate(None, _ASCII_SPACES)
        return len(visible), len(visible) - len(visible.translate(None, _ASCII_LETTERS))
    visible_text = _SPACES.sub("", text)
    return len(visible_text), len(_NON_LETTERS.sub("", visible_text))


def content_digest(text: str) -> bytes:
    """A 16-byte fingerprint of a normalised document (exact dedupe and the split hash)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads shingle hashes over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def minhash_signatures(tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """MinHash signatures ``(len(lengths), NUM_BINS)`` uint32 of documents stored back to back.

    ``tokens`` holds the documents' token ids concatenated, ``lengths`` their lengths.
    A document shorter than a shingle gets an all-`EMPTY` signature (it is never a near duplicate).
    """
    n_docs = len(lengths)
    signatures = np.full(n_docs * NUM_BINS, EMPTY, dtype=np.uint32)
    n_shingles = len(tokens) - SHINGLE + 1
    if n_docs == 0 or n_shingles <= 0:
        return signatures.reshape(n_docs, NUM_BINS)
    with np.errstate(over="ignore"):
        ids = tokens.astype(np.uint64)
        h = np.zeros(n_shingles, dtype=np.uint64)
        for j in range(SHINGLE):  # polynomial hash of each window, wrapping at 2**64
            h = h * np.uint64(1_000_003) + ids[j : j + n_shingles]
        h = _mix64(h)
    ends = np.cumsum(lengths)
    doc_of = np.repeat(np.arange(n_docs), lengths)[:n_shingles]
    valid = np.arange(n_shingles) + SHINGLE <= ends[doc_of]  # windows that stay inside one document
    h, doc_of = h[valid], doc_of[valid]
    shift = np.uint64(64 - int(np.log2(NUM_BINS)))
    bins = (h >> shift).astype(np.int64)
    values = ((h >> np.uint64(16)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    np.minimum.at(signatures, doc_of * NUM_BINS + bins, values)
    return signatures.reshape(n_docs, NUM_BINS)


def band_rows(threshold: float, num_bins: int = NUM_BINS) -> int:
    """Rows per LSH band: the most selective banding that still finds 95% of pairs at ``threshold``."""
    best = 1
    for rows in (r for r in range(1, num_bins + 1) if num_bins % r == 0):
        bands = num_bins // rows
        if 1 - (1 - threshold**rows) ** bands >= 0.95:
            best = rows
    return best


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Jaccard estimate of two signature arrays, over bins where either is non-empty."""
    either = (a != EMPTY) | (b != EMPTY)
    agree = (a == b) & (a != EMPTY)
    return agree.sum(axis=1) / np.maximum(either.sum(axis=1), 1)


def near_duplicates(signatures: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of documents that are near duplicates of an earlier document.

    Within each LSH band, documents with the same band key are compared with the
    earliest one holding that key; a later document whose estimated Jaccard similarity
    reaches ``threshold`` is marked.
    """
    n_docs = len(signatures)
    duplicate = np.zeros(n_docs, dtype=bool)
    if threshold <= 0 or n_docs < 2:
        return duplicate
    rows = band_rows(threshold)
    has_shingles = (signatures != EMPTY).any(axis=1)
    docs = np.flatnonzero(has_shingles)
    multipliers = _mix64(np.arange(1, rows + 1, dtype=np.uint64))
    for start in range(0, NUM_BINS, rows):  # one band at a time: memory stays O(documents)
        with np.errstate(over="ignore"):
            keys = (signatures[docs, start : start + rows].astype(np.uint64) * multipliers).sum(axis=1, dtype=np.uint64)
        by_key = np.argsort(keys, kind="stable")  # stable: earliest document first in each run
        order, sorted_keys = docs[by_key], keys[by_key]
        run_start = np.ones(len(order), dtype=bool)
        run_start[1:] = sorted_keys[1:] != sorted_keys[:-1]
        first = order[np.maximum.accumulate(np.where(run_start, np.arange(len(order)), 0))]
        later, first = order[~run_start], first[~run_start]
        undecided = ~duplicate[later]
        later, first = later[undecided], first[undecided]
        for chunk in range(0, len(later), PAIR_CHUNK):
            a, b = later[chunk : chunk + PAIR_CHUNK], first[chunk : chunk + PAIR_CHUNK]
            duplicate[a[estimated_jaccard(signatures[a], signatures[b]) >= threshold]] = True
    return duplicate
