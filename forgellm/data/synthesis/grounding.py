"""The grounding check: is a generated answer (or paraphrase) supported by its chunk?

A teacher, small or large, sometimes answers from what it believes rather than from the text
it was given; training on that teaches the model the teacher's mistakes. The check is lexical
and cheap: the content words of an answer (stopwords removed, light stemming so "founded"
meets "founder" and "islands" meets "island") must be found in the chunk, at least
``min_support`` of them, and every number in it exactly. A paraphrase uses other words by
design, so only what it must not change is checked: its numbers and its names (capitalised
words inside a sentence) must come from the chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+(?:['’.,][^\W_]+)*", re.UNICODE)
_NUMBER = re.compile(r"\d")
_SUFFIXES = ("ing", "ers", "er", "ed", "es", "ly", "s")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*|[\"“(]\s*)$")

STOPWORDS = frozenset(
    """
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each either else ever every few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just least less let like
made make many may me might more most much must my myself neither no nor not now of off on once one only or
other others our ours ourselves out over own per quite rather same several shall she should since so some such
than that the their theirs them themselves then there these they this those though through thus to too under
until up upon us very was we were what when where whether which while who whom whose why will with within
without would yes yet you your yours yourself yourselves called known named answer question text passage
document according
""".split()
)


@dataclass(frozen=True)
class Support:
    """How much of a generated text its chunk supports."""

    words: int  # content words checked
    found: int  # of them, found in the chunk
    missing: tuple[str, ...]  # the words not found (for reports and tests)
    missing_numbers: tuple[str, ...]  # numbers not found: one is enough to reject

    @property
    def share(self) -> float:
        return self.found / self.words if self.words else 0.0

    def grounded(self, min_support: float) -> bool:
        return self.words > 0 and not self.missing_numbers and self.share >= min_support


class ChunkIndex:
    """The word stems and numbers of one chunk, built once and checked against many answers."""

    def __init__(self, chunk: str):
        words = _words(chunk)
        self.stems = {_stem(w) for w in words}
        self.numbers = {w for w in (_number(w) for w in words) if w}

    def support(self, text: str) -> Support:
        """Support of ``text``'s content words (numbers included, each checked exactly)."""
        content = [w for w in dict.fromkeys(_words(text)) if w not in STOPWORDS]
        numbers = [n for n in (_number(w) for w in content) if n]
        missing_numbers = tuple(n for n in numbers if n not in self.numbers)
        missing = tuple(w for w in content if not _number(w) and _stem(w) not in self.stems)
        return Support(len(content), len(content) - len(missing) - len(missing_numbers), missing, missing_numbers)

    def answer_grounded(self, answer: str, min_support: float) -> bool:
        return self.support(answer).grounded(min_support)

    def paraphrase_grounded(self, paraphrase: str) -> bool:
        """No number and no name that the chunk does not have."""
        names = [_stem(n) for n in proper_names(paraphrase)]
        numbers = [n for n in (_number(w) for w in _words(paraphrase)) if n]
        return all(n in self.numbers for n in numbers) and all(n in self.stems for n in names)


def proper_names(text: str) -> list[str]:
    """Capitalised words that do not start a sentence (lower-cased), e.g. place and people names."""
    names = []
    for match in _WORD.finditer(text):
        word = match.group()
        if word[0].isupper() and not _SENTENCE_START.search(text[max(0, match.start() - 3) : match.start()]):
            lowered = word.lower()
            if lowered not in STOPWORDS and not _number(lowered):
                names.append(lowered)
    return names


def _words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in _WORD.findall(text)]


def _number(word: str) -> str | None:
    """The digits of a word that holds any ("1,642" and "1642" are the same number), else None."""
    if not _NUMBER.search(word):
        return None
    return re.sub(r"[,.'’]", "", word)


def _stem(word: str) -> str:
    word = word.removesuffix("'s")
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word
