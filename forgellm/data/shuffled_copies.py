"""Shuffled copies of the training documents: each fact seen in several contexts, no teacher needed.

A small model stores a fact so that a question in other words retrieves it only when it has seen
the fact in varied contexts; one fixed text read several times is learnt by heart instead
("Physics of Language Models, Part 3.1", Allen-Zhu and Li, 2023: reordering the sentences of
each biography between exposures is one of the augmentations that make knowledge extractable).
`shuffled_copies: N` adds, for every training document, N copies whose paragraphs and whose
sentences within each paragraph are in a new random order. Copies are made after cleaning,
deduplication and the train/validation split, from the training documents only, so they never
leak into validation and are never taken for near duplicates of their original.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.data.packing import StagedDocs, Staging
from forgellm.data.tokenizing import HuggingFaceEncoder

# A sentence ends at . ! or ? followed by white space and a capital, a digit or an opening quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_LIST_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s+")
_BATCH_DOCS = 256  # documents decoded and encoded at a time


def shuffle_text(text: str, rng: random.Random) -> str:
    """``text`` with its paragraphs, and the sentences (or list items) within each, reordered.

    A Markdown title on the first line stays first; other headings are dropped, since out of
    place they would label the wrong paragraph."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    title = [paragraphs.pop(0)] if paragraphs and paragraphs[0].startswith("#") else []
    shuffled = []
    for paragraph in paragraphs:
        if paragraph.startswith("#"):
            continue
        units = _units(paragraph)
        rng.shuffle(units)
        joiner = "\n" if any(_LIST_ITEM.match(u) for u in units) else " "
        shuffled.append(joiner.join(units))
    rng.shuffle(shuffled)
    return "\n\n".join(title + shuffled)


def _units(paragraph: str) -> list[str]:
    """The sentences of a prose paragraph; the items of a list, each one unit."""
    units: list[str] = []
    prose: list[str] = []
    for line in paragraph.splitlines():
        if _LIST_ITEM.match(line):
            units.extend(_sentences(" ".join(prose)))
            prose = []
            units.append(line.strip())
        else:
            prose.append(line.strip())
    units.extend(_sentences(" ".join(prose)))
    return units


def _sentences(prose: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(prose) if s] if prose else []


def with_shuffled_copies(
    docs: StagedDocs, chosen: np.ndarray, folder: Path, tokenizer: Any, *, copies: int, seed: int
) -> tuple[StagedDocs, int]:
    """Stage the ``chosen`` documents, then ``copies`` shuffled copies of each, into ``folder``.

    Returns the new staged documents (all of them train, in that order) and the tokens the
    copies added. The copies are decoded from the staged tokens and encoded again as documents
    are (ending with EOS)."""
    encoder = HuggingFaceEncoder.of(tokenizer)
    eos = encoder.eos_id
    out = Staging(folder, with_mask=False)
    for i in chosen:
        out.add(docs.doc(int(i))[0])
    added = 0
    rng = random.Random(seed)
    for _ in range(copies):
        for start in range(0, len(chosen), _BATCH_DOCS):  # read a block at a time: memory stays flat
            block = [docs.doc(int(i))[0] for i in chosen[start : start + _BATCH_DOCS]]
            texts = tokenizer.batch_decode([ids[:-1] if len(ids) and ids[-1] == eos else ids for ids in block])
            encoded = encoder([shuffle_text(t, rng) for t in texts])
            out.add_many(encoded.tokens, encoded.lengths)
            added += int(encoded.lengths.sum())
    return out.close(), added
