"""Text out of a token stream: incremental detokenisation and stop strings, shared by both engines.

Engines produce token ids one at a time; these two small pieces turn them into text pieces a
reader can print immediately, without splitting a multi-byte character and without ever
showing the beginning of a stop string that later completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Prompt tokens kept as left context, so the first generated token gets its leading space
# (SentencePiece tokenizers drop it when a token is decoded alone).
_CONTEXT_TOKENS = 4
_INCOMPLETE = "\ufffd"  # what a tokenizer decodes half of a UTF-8 character to


class IncrementalDecoder:
    """Decode token ids as they arrive; ``add`` returns only the new, complete text.

    Decoding each token alone breaks multi-byte characters and word-initial spaces, so each
    step decodes a short window (a few tokens of context plus the unread ones) and returns
    what it adds beyond the context: the method of Hugging Face TGI and vLLM.
    """

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[int] = (), *, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip_special = skip_special_tokens
        self._ids: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0  # start of the context window
        self._read_offset = len(self._ids)  # first token whose text has not been returned

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special)

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        if len(text) > len(prefix) and not text.endswith(_INCOMPLETE):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        """The text still held back at the end of the stream (possibly an incomplete character)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return text[len(prefix) :]


class StopStrings:
    """Cut generated text at the first stop string, holding back text that may start one."""

    def __init__(self, stops: Sequence[str]):
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to show now, whether a stop string was reached)."""
        if not self._stops:
            return text, False
        buffer = self._pending + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buffer[: min(hits)], True
        keep = self._partial_match_length(buffer)
        self._pending = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def _partial_match_length(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of some stop string."""
        for length in range(min(self._hold, len(buffer)), 0, -1):
            suffix = buffer[-length:]
            if any(stop.startswith(suffix) for stop in self._stops):
                return length
        return 0

    def flush(self) -> str:
        """At the end of the stream: the held-back text, which turned out not to be a stop string."""
        text, self._pending = self._pending, ""
        return text
