"""Batch tokenisation of documents with the model's own tokenizer, as fast as this machine allows.

Byte-level BPE tokenizers (the GPT-2, SmolLM, Qwen2 and Llama 3 families) are exactly what
`tiktoken` implements, and its encoder runs ~2.5x faster per core than the Hugging Face
one and releases the GIL. So `document_encoder` rebuilds such a tokenizer as a tiktoken
encoding from the tokenizer's own vocabulary, merges, split pattern and added tokens, checks
that it gives the same ids as the Hugging Face tokenizer on every vocabulary entry and on
probe texts, and encodes with it on all cores. Any tokenizer it cannot rebuild exactly (other
pre-tokenizers or normalisers, dropout, byte fallback, a failed check) is used through its
Hugging Face fast backend, so the ids are always the tokenizer's own.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import os
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from forgellm.jsonio import read_json, write_json_atomic
from forgellm.models.pre_tokenizers import gguf_pre_name

log = logging.getLogger(__name__)

#: Changes when the rebuild changes, so verdicts kept on disk are checked again.
REBUILD_VERSION = 2

#: GPT-2's split pattern, which `ByteLevel(use_regex=True)` applies (written as tiktoken's r50k_base does).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
#: The same after `Digits(individual_digits=True)` (SmolLM's split): each digit its own piece, and
#: the whitespace before a digit one piece, since the digit split ends the text the regex sees there.
DIGITS_THEN_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""

#: Texts that exercise every branch of the split patterns and of byte-level BPE.
PROBE_TEXTS = (
    "The quick brown fox jumps over the lazy dog. It's 12:45, isn't it? They'll say we've won.",
    "  leading spaces\n\n\ttabs\tand   runs of   spaces   \n trailing   ",
    "Numbers 1234567890 3.14159 -42 1e-5 0x1F 2026-11-30; 100% of 1,000,000",
    "Spaces before digits: a  1, b\n\n22, c \t333, d   x4 5'6 7's \u00bd\u00b2 \u0663\u0664",
    "Unicode: café naïve Ærøskøbing straße Привет мир 東京 日本語の文章 한국어 العربية 😀👍🏽 ∑∫√",
    "Code: def f(x):\n    return {'a': [1, 2]}  # comment\n<html><body>&amp;</body></html>",
    "Punctuation!!! ??? ... --- ___ *** ((())) [[]] {{}} <<>> @#$%^&* ~`|\\/",
    "Mixed\u00a0spaces\u2003and\u3000ideographic\u200bzero width",
)


@dataclass
class Encoded:
    """Token ids of a batch of documents, back to back (int32), each ending with the EOS token,
    and each document's length."""

    tokens: np.ndarray
    lengths: np.ndarray  # int64

    def documents(self) -> list[np.ndarray]:
        """The documents' ids one array each."""
        return np.split(self.tokens, np.cumsum(self.lengths)[:-1]) if len(self.lengths) else []

    @classmethod
    def ending_with_eos(cls, tokens: np.ndarray, lengths: np.ndarray, eos_id: int) -> Encoded:
        """``tokens`` with the EOS token appended to every document that does not already end with it."""
        ends = np.cumsum(lengths)
        needs = (
            (lengths == 0) | (tokens[np.maximum(ends - 1, 0)] != eos_id) if len(tokens) else np.ones(len(lengths), bool)
        )
        return cls(np.insert(tokens, ends[needs], np.int32(eos_id)), lengths + needs)


class DocumentEncoder(Protocol):
    """Encodes a batch of documents; special tokens written in the text are encoded as special
    tokens, as the tokenizer does. ``spec`` rebuilds the same encoder in another process (None
    when it cannot be rebuilt there)."""

    name: str
    spec: EncoderSpec | None

    def __call__(self, texts: list[str]) -> Encoded: ...


@dataclass
class TiktokenParts:
    """A byte-level BPE tokenizer in tiktoken's terms. Small to pickle: a worker process makes
    the encoding from it in milliseconds, where rebuilding from the definition takes half a second."""

    pattern: str
    ranks: dict[bytes, int]
    special: dict[str, int]
    rank_to_id: np.ndarray  # tiktoken rank -> the tokenizer's id (-1: a byte the vocabulary lacks)
    nfc: bool  # the tokenizer normalises to NFC first

    @cached_property
    def encoding(self) -> Any:
        """The tiktoken encoding, compiled once per process (its check and its encoders share it)."""
        import tiktoken

        return tiktoken.Encoding(
            "forgellm-bpe", pat_str=self.pattern, mergeable_ranks=self.ranks, special_tokens=self.special
        )

    def __getstate__(self) -> dict[str, Any]:
        # A worker process compiles its own encoding; sending the compiled one would pickle the ranks twice.
        return {k: v for k, v in self.__dict__.items() if k != "encoding"}


@dataclass(frozen=True)
class EncoderSpec:
    """What a worker process needs to build the same encoder as this one."""

    eos: str
    eos_id: int
    tiktoken: TiktokenParts | None = None  # the rebuild, when it passed the check
    definition: str | None = None  # otherwise the Hugging Face tokenizer's serialised definition

    def build(self, threads: int = 1) -> DocumentEncoder:
        if self.tiktoken is not None:
            return TiktokenEncoder(self.tiktoken, eos=self.eos, eos_id=self.eos_id, threads=threads, spec=self)
        from tokenizers import Tokenizer

        assert self.definition is not None  # a spec carries the rebuild or the definition (HuggingFaceEncoder.of)
        return HuggingFaceEncoder(Tokenizer.from_str(self.definition), self.eos_id, spec=self)


class HuggingFaceEncoder:
    """The tokenizer's Hugging Face fast backend (Rust, batch-parallel), or the tokenizer itself
    when it has none."""

    name = "huggingface"

    def __init__(self, tokenizer: Any, eos_id: int, *, spec: EncoderSpec | None = None):
        self.tokenizer, self.eos_id, self.spec = tokenizer, eos_id, spec
        self.backend = (
            tokenizer if hasattr(tokenizer, "encode_batch_fast") else getattr(tokenizer, "backend_tokenizer", None)
        )

    @classmethod
    def of(cls, tokenizer: Any) -> HuggingFaceEncoder:
        """The encoder of a transformers tokenizer."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        spec = None
        if backend is not None and tokenizer.eos_token is not None:
            spec = EncoderSpec(tokenizer.eos_token, tokenizer.eos_token_id, definition=backend.to_str())
        return cls(tokenizer, tokenizer.eos_token_id, spec=spec)

    def __call__(self, texts: list[str]) -> Encoded:
        if self.backend is not None:
            ids = [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=True)]
        else:
            ids = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
        return Encoded.ending_with_eos(flat, lengths, self.eos_id)


class TiktokenEncoder:
    """A byte-level BPE tokenizer rebuilt as a tiktoken encoding, run on ``threads`` threads.

    Each thread encodes its share of a batch in one call, the documents joined by the EOS
    token: special tokens split the text, so each document is encoded exactly as on its own,
    and the per-call overhead is paid once instead of once a document.
    """

    name = "tiktoken"

    def __init__(self, parts: TiktokenParts, *, eos: str, eos_id: int, threads: int, spec: EncoderSpec | None = None):
        self.encoding, self.rank_to_id, self.nfc = parts.encoding, parts.rank_to_id, parts.nfc
        self.eos, self.eos_id, self.spec = eos, eos_id, spec
        self.gaps = bool((self.rank_to_id < 0).any())
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="forgellm-bpe") if threads > 1 else None
        self.threads = threads

    def _encode(self, text: str) -> np.ndarray:
        if self.nfc and not text.isascii():
            text = unicodedata.normalize("NFC", text)
        ids = self.rank_to_id[self.encoding.encode_to_numpy(text, allowed_special="all", disallowed_special=())]
        return ids[ids >= 0] if self.gaps else ids

    def _encode_joined(self, texts: list[str]) -> Encoded:
        ids = self._encode(self.eos.join(texts) + self.eos)
        ends = np.flatnonzero(ids == self.eos_id) + 1
        if len(ends) == len(texts):
            return Encoded(ids, np.diff(ends, prepend=0))
        # a document writes the EOS token itself: encode one by one
        docs = [self._encode(text) for text in texts]
        lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        return Encoded.ending_with_eos(np.concatenate(docs) if docs else np.zeros(0, np.int32), lengths, self.eos_id)

    def __call__(self, texts: list[str]) -> Encoded:
        if self._pool is None or len(texts) < 2 * self.threads:
            return self._encode_joined(texts)
        step = -(-len(texts) // self.threads)
        parts = list(self._pool.map(self._encode_joined, [texts[i : i + step] for i in range(0, len(texts), step)]))
        return Encoded(np.concatenate([p.tokens for p in parts]), np.concatenate([p.lengths for p in parts]))


def document_encoder(tokenizer: Any, *, verdicts: Path | None = None, threads: int | None = None) -> DocumentEncoder:
    """The fastest encoder that gives exactly ``tokenizer``'s ids (see the module docstring).

    The check of a rebuild takes about a second; with ``verdicts`` (a folder) its outcome is
    kept there per tokenizer, so it runs once.
    """
    reference = HuggingFaceEncoder.of(tokenizer)
    if reference.spec is None or reference.spec.definition is None:
        return reference
    definition, eos, eos_id = reference.spec.definition, reference.spec.eos, reference.spec.eos_id
    parts = _tiktoken_parts(definition)
    if parts is None or eos not in parts.special:
        return reference
    fast = TiktokenEncoder(
        parts,
        eos=eos,
        eos_id=eos_id,
        threads=threads or available_cores(),
        spec=EncoderSpec(eos, eos_id, tiktoken=parts),
    )
    return fast if _rebuild_matches(fast, reference, definition, verdicts) else reference


def available_cores() -> int:
    """CPU cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else max(1, os.cpu_count() or 1)


def _rebuild_matches(
    fast: TiktokenEncoder, reference: HuggingFaceEncoder, definition: str, verdicts: Path | None
) -> bool:
    """Whether ``fast`` gives ``reference``'s ids on `_check_texts`; remembered in this process and in ``verdicts``."""
    if definition in _MATCHES:
        return _MATCHES[definition]
    record = verdicts / f"{hashlib.blake2b(definition.encode(), digest_size=12).hexdigest()}.json" if verdicts else None
    if record is not None and (verdict := read_json(record)) is not None and verdict.get("version") == REBUILD_VERSION:
        _MATCHES[definition] = bool(verdict["matches"])
        return _MATCHES[definition]
    mismatch = next(
        (m for texts in _check_texts(reference.backend) if (m := _first_mismatch(fast, reference, texts))), None
    )
    if mismatch is not None:
        log.info(
            "data: the tiktoken rebuild of this tokenizer differs on %r; using the Hugging Face tokenizer", mismatch
        )
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, {"version": REBUILD_VERSION, "matches": mismatch is None, "first_mismatch": mismatch})
    _MATCHES[definition] = mismatch is None
    return mismatch is None


_MATCHES: dict[str, bool] = {}  # tokenizer definition -> its rebuild passed the check


@lru_cache(maxsize=4)
def _tiktoken_parts(definition: str) -> TiktokenParts | None:
    """A byte-level BPE ``tokenizer.json`` in tiktoken's terms, or None when tiktoken cannot do what it does."""
    spec = orjson.loads(definition)  # a tokenizer.json is megabytes: several times faster than json
    model, added = spec.get("model") or {}, spec.get("added_tokens") or []
    pattern = _split_pattern(spec.get("pre_tokenizer"))
    normalizer = spec.get("normalizer")
    if (
        pattern is None
        or not _adds_nothing(spec.get("post_processor"))
        or normalizer not in (None, {"type": "NFC"})
        or model.get("type") != "BPE"
        or model.get("dropout")
        or model.get("byte_fallback")
        or model.get("continuing_subword_prefix")
        or model.get("end_of_word_suffix")
        or any(a["lstrip"] or a["rstrip"] or a["single_word"] for a in added)
    ):
        return None
    if importlib.util.find_spec("tiktoken") is None:
        return None
    vocab: dict[str, int] = model["vocab"]
    if not set("".join(vocab)) <= _byte_of_char().keys():  # a token outside the byte alphabet: not byte-level
        return None
    as_bytes = {token: _token_bytes(token) for token in vocab}
    # tiktoken merges the adjacent pair whose concatenation has the lowest rank, so a merged token's
    # rank is its merge's position; single bytes come first. Ranks are mapped back to the ids after;
    # a byte the vocabulary lacks maps to -1 and is dropped, as the Hugging Face tokenizer drops it.
    ranks: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    try:
        for position, merge in enumerate(model["merges"]):
            left, right = merge.split(" ") if isinstance(merge, str) else merge
            ranks.setdefault(as_bytes[left + right], 256 + position)
    except KeyError:  # a merge whose result is not in the vocabulary
        return None
    special = {a["content"]: 256 + len(model["merges"]) + i for i, a in enumerate(added)}
    rank_to_id = np.full(256 + len(model["merges"]) + len(added), -1, dtype=np.int32)
    for token, token_id in vocab.items():
        rank = ranks.get(as_bytes[token])
        if rank is not None:
            rank_to_id[rank] = token_id
    for a, rank in zip(added, special.values()):
        rank_to_id[rank] = a["id"]
    parts = TiktokenParts(pattern, ranks, special, rank_to_id, nfc=normalizer is not None)
    try:
        _ = parts.encoding  # compiles the split pattern
    except ValueError:  # a split pattern tiktoken's regex engine does not take
        return None
    return parts


def _adds_nothing(post_processor: dict[str, Any] | None) -> bool:
    """Whether a post-processor leaves the ids as they are (no BOS or EOS added)."""
    if post_processor is None or post_processor.get("type") == "ByteLevel":
        return True
    return post_processor.get("type") == "TemplateProcessing" and post_processor.get("single") == [
        {"Sequence": {"id": "A", "type_id": 0}}
    ]


def _split_pattern(pre_tokenizer: dict[str, Any] | None) -> str | None:
    """The regex a byte-level pre-tokenizer splits with, when tiktoken can apply it unchanged."""
    if not pre_tokenizer:
        return None
    known = {"gpt-2": GPT2_PATTERN, "smollm": DIGITS_THEN_GPT2_PATTERN}.get(gguf_pre_name(pre_tokenizer) or "")
    if known is not None:
        return known
    steps = pre_tokenizer.get("pretokenizers") if pre_tokenizer.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, level = steps
    if (
        split.get("type") != "Split"
        or "Regex" not in (split.get("pattern") or {})
        or split.get("behavior") != "Isolated"
        or split.get("invert")
        or level.get("type") != "ByteLevel"
        or level.get("use_regex")
        or level.get("add_prefix_space")
    ):
        return None
    return split["pattern"]["Regex"]


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet read backwards: the byte each printable character of a
    byte-level vocabulary stands for."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(extra)}}


class _ToLatin1(dict):
    """A `str.translate` table from `_byte_of_char`'s characters to the Latin-1 character of
    their byte; any other character becomes a space."""

    def __missing__(self, key: int) -> str:
        return " "


@lru_cache(maxsize=1)
def _latin1_table() -> _ToLatin1:
    return _ToLatin1({ord(c): chr(b) for c, b in _byte_of_char().items()})


def _token_bytes(token: str) -> bytes:
    """The bytes a byte-level vocabulary entry stands for."""
    return token.translate(_latin1_table()).encode("latin-1")


def _check_texts(backend: Any) -> list[list[str]]:
    """Every vocabulary entry as text (a tokenizer may take an entry no merge makes), and the
    probe texts with and around every added token: where a rebuild could differ, it shows."""
    added = {token.content for token in backend.get_added_tokens_decoder().values()}
    entries = (_token_bytes(token).decode("utf-8", "ignore") for token in backend.get_vocab())
    return [
        [text for text in entries if text and text not in added],
        [*PROBE_TEXTS, "\n\n".join(PROBE_TEXTS), *(f"before {text} after" for text in sorted(added))],
    ]


def _first_mismatch(
    fast: Callable[[list[str]], Encoded], reference: Callable[[list[str]], Encoded], texts: list[str]
) -> str | None:
    """The first of ``texts`` the two encoders give different ids for, or None."""
    a, b = fast(texts), reference(texts)
    if np.array_equal(a.lengths, b.lengths) and np.array_equal(a.tokens, b.tokens):
        return None
    return next(text for text, x, y in zip(texts, a.documents(), b.documents()) if not np.array_equal(x, y))
