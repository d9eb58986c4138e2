"""Instruction records: format detection, conversion to chat messages, rendering with a loss mask.

Formats (detected per file from its first usable record, or forced by ``ift_format``):

- ``messages``: ``{"messages": [{"role": "user"|"assistant"|"system", "content": ...}, ...]}``
- ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}``
- ``alpaca``: ``{"instruction": ..., "input": ... (optional), "output": ...}``
- ``prompt_completion``: ``{"prompt": ..., "completion": ...}``
- ``text``: ``{"text": ...}``: trained on every token, like CPT.

Chat records are rendered with the tokenizer's own chat template. The loss mask covers
the assistant turns only: each assistant turn's span is found by rendering the
conversation up to that turn with and without it (the template's own turn boundaries),
and a token is a target when it starts inside such a span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forgellm.data.cleaning import normalize_text
from forgellm.errors import UserError

FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
}
CHAT_ROLES = ("system", "user", "assistant")

#: Used only when the tokenizer has no chat template of its own (a base model): ChatML.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class RecordError(ValueError):
    """A record that cannot be used; the message is the reason reported in ``skipped``."""


def detect_format(record: dict[str, Any]) -> str | None:
    """The format a record looks like, or None."""
    if isinstance(record.get("messages"), list):
        return "messages"
    if isinstance(record.get("conversations"), list):
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "text" in record:
        return "text"
    return None


def to_messages(record: dict[str, Any], fmt: str) -> list[dict[str, str]] | str:
    """Chat messages for a chat format, or the text itself for ``text``. Raises `RecordError`."""
    if fmt == "text":
        return _string(record, "text")
    if fmt == "messages":
        messages = [
            _message(m, "role", "content", i, roles=dict(zip(CHAT_ROLES, CHAT_ROLES)))
            for i, m in enumerate(_list(record, "messages"))
        ]
    elif fmt == "sharegpt":
        messages = [
            _message(m, "from", "value", i, roles=SHAREGPT_ROLES) for i, m in enumerate(_list(record, "conversations"))
        ]
    elif fmt == "alpaca":
        instruction, extra = _string(record, "instruction"), record.get("input") or ""
        if not isinstance(extra, str):
            raise RecordError(f"field 'input' is a {type(extra).__name__}, expected a string")
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": _string(record, "output")}]
    elif fmt == "prompt_completion":
        messages = [
            {"role": "user", "content": _string(record, "prompt")},
            {"role": "assistant", "content": _string(record, "completion")},
        ]
    else:
        raise UserError(f"unknown IFT format {fmt!r}; use one of auto, {', '.join(FORMATS)}")
    messages = [{"role": m["role"], "content": normalize_text(m["content"])} for m in messages]
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError("no assistant turn: nothing to train on")
    if messages[0]["role"] == "assistant" or (
        messages[0]["role"] == "system" and messages[1:2] and messages[1]["role"] == "assistant"
    ):
        raise RecordError("the conversation starts with an assistant turn; it needs a user turn first")
    return messages


def _string(record: dict[str, Any], key: str) -> str:
    if key not in record:
        raise RecordError(f"missing field {key!r} (found: {', '.join(map(str, record)) or 'none'})")
    value = record[key]
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} is a {type(value).__name__}, expected a string")
    return value


def _list(record: dict[str, Any], key: str) -> list[Any]:
    value = record.get(key)
    if not isinstance(value, list) or not value:
        raise RecordError(f"field {key!r} must be a non-empty list of turns")
    return value


def _message(turn: Any, role_key: str, text_key: str, index: int, *, roles: dict[str, str]) -> dict[str, str]:
    if not isinstance(turn, dict):
        raise RecordError(f"turn {index} is a {type(turn).__name__}, expected an object")
    role = roles.get(str(turn.get(role_key, "")).lower())
    if role is None:
        raise RecordError(f"turn {index}: {role_key}={turn.get(role_key)!r} is not one of {', '.join(sorted(roles))}")
    content = turn.get(text_key)
    if not isinstance(content, str):
        raise RecordError(f"turn {index}: {text_key!r} must be a string")
    return {"role": role, "content": content}


@dataclass
class Rendered:
    """A record as text, with the character spans that are training targets."""

    text: str
    spans: list[tuple[int, int]]  # [start, end) character ranges trained on
    add_special_tokens: bool  # plain text gets the tokenizer's own BOS/EOS handling; chat text has them inline


class ChatRenderer:
    """Renders conversations with a tokenizer's chat template and finds the assistant spans."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.template = None if getattr(tokenizer, "chat_template", None) else FALLBACK_CHAT_TEMPLATE
        self.eos_text = tokenizer.eos_token or ""

    @property
    def template_source(self) -> str:
        return "fallback-chatml" if self.template else "model"

    def _apply(self, messages: Sequence[dict[str, str]], *, generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, chat_template=self.template, add_generation_prompt=generation_prompt
        )

    def render(self, item: list[dict[str, str]] | str) -> Rendered:
        if isinstance(item, str):
            text = normalize_text(item)
            return Rendered(text + self.eos_text, [(0, len(text) + len(self.eos_text))], add_special_tokens=True)
        full = self._apply(item, generation_prompt=False)
        spans: list[tuple[int, int]] = []
        searched_to = 0
        for index, message in enumerate(item):
            if message["role"] != "assistant":
                continue
            span = self._span_by_prefixes(full, item, index) or self._span_by_search(
                full, message["content"], searched_to
            )
            if span is None:
                raise RecordError(f"turn {index}: the chat template does not reproduce the assistant text")
            spans.append(span)
            searched_to = span[1]
        return Rendered(full, spans, add_special_tokens=False)

    def _span_by_prefixes(self, full: str, messages: list[dict[str, str]], index: int) -> tuple[int, int] | None:
        """The turn's span from the template itself: render up to the turn's header, then through its end."""
        before = self._apply(messages[:index], generation_prompt=True)
        through = self._apply(messages[: index + 1], generation_prompt=False)
        if not (full.startswith(before) and full.startswith(through) and len(through) > len(before)):
            return None  # templates that rewrite earlier turns (e.g. drop past reasoning) fall back to search
        end = len(before) + len(through[len(before) :].rstrip())
        return len(before), end

    def _span_by_search(self, full: str, content: str, start: int) -> tuple[int, int] | None:
        at = full.find(content, start)
        if at < 0 or not content:
            return None
        end = at + len(content)
        if self.eos_text and full.startswith(self.eos_text, end):  # learn to stop
            end += len(self.eos_text)
        return at, end


def encode_rendered(tokenizer: Any, rendered: list[Rendered]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Token ids (int32) and loss mask (uint8) of each rendered record, tokenised in batches."""
    out: list[tuple[int, np.ndarray, np.ndarray]] = []
    for special in (False, True):
        chosen = [i for i, r in enumerate(rendered) if r.add_special_tokens == special]
        if not chosen:
            continue
        enc = tokenizer(
            [rendered[i].text for i in chosen],
            add_special_tokens=special,
            return_offsets_mapping=True,
            return_attention_mask=False,
        )
        for i, ids, offsets in zip(chosen, enc["input_ids"], enc["offset_mapping"]):
            starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
            ends = np.fromiter((o[1] for o in offsets), dtype=np.int64, count=len(offsets))
            mask = np.zeros(len(ids), dtype=np.uint8)
            for span_start, span_end in rendered[i].spans:
                mask[(starts >= span_start) & (starts < span_end) & (ends > starts)] = 1
            if special:  # tokens the tokenizer added itself (BOS) have empty offsets: context, not targets
                mask[ends == starts] = 0
            out.append((i, np.asarray(ids, dtype=np.int32), mask))
    out.sort(key=lambda item: item[0])
    return [(ids, mask) for _, ids, mask in out]
