"""Preference pairs: ``{prompt, chosen, rejected}`` records -> rendered, masked token pairs.

Layouts (detected per record, reported per file; those of TRL and UltraFeedback-style sets):

- ``standard``: ``prompt``, ``chosen`` and ``rejected`` are strings (the prompt is one user turn).
- ``conversational``: ``prompt`` is a message list (system/user/assistant turns, ending with the
  user's), ``chosen`` and ``rejected`` are lists of assistant messages.

Both responses are rendered after the prompt with the tokenizer's chat template (`ChatRenderer`);
the mask covers the response turns only. A pair longer than ``max_seq_length`` keeps its prompt
whole and cuts both responses at ``max_seq_length`` (counted as truncated); when the prompt leaves
no response token, the pair is dropped. A pair whose two responses are equal teaches nothing and is
dropped. A record without ``chosen`` or ``rejected`` is not a preference record at all: the
pipeline stops and names its file and line, before any training starts.

Prepared pairs are two arrays of shape ``(pairs, 2, max_seq_length)`` (`PreferencePairs`):
``[:, 0]`` the chosen sequence, ``[:, 1]`` the rejected one, each padded on the right.
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.data.cleaning import content_digest, normalize_text
from forgellm.data.ift import CHAT_ROLES, ChatRenderer, RecordError, Rendered, _message, encode_rendered
from forgellm.data.packing import Staging
from forgellm.data.readers import Row
from forgellm.data.settings import DataSettings
from forgellm.data.split import assign_validation, split_value
from forgellm.data.stats import DataReport, first_seen
from forgellm.errors import UserError

FIELDS = ("prompt", "chosen", "rejected")
NO_ROOM_HINT = (
    "raise max_seq_length or shorten the prompts: the prompt alone fills max_seq_length, "
    "leaving no response token to compare"
)


def detect_layout(record: dict[str, Any]) -> str | None:
    """The record's layout, or None when it is not a preference record (a missing field)."""
    if not all(key in record for key in FIELDS):
        return None
    return "conversational" if isinstance(record["prompt"], list) else "standard"


def to_pair(record: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    """(prompt messages, chosen messages, rejected messages). Raises `RecordError`."""
    prompt = record["prompt"]
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and prompt:
        messages = [
            _message(m, "role", "content", i, roles=dict(zip(CHAT_ROLES, CHAT_ROLES))) for i, m in enumerate(prompt)
        ]
    else:
        raise RecordError("field 'prompt' must be a string or a non-empty list of messages")
    if messages[-1]["role"] != "user":
        raise RecordError("the prompt must end with a user turn (the responses answer it)")
    return (_normalized(messages), _normalized(_response(record, "chosen")), _normalized(_response(record, "rejected")))


def _response(record: dict[str, Any], key: str) -> list[dict[str, str]]:
    value = record[key]
    if isinstance(value, str):
        messages = [{"role": "assistant", "content": value}]
    elif isinstance(value, list) and value:
        messages = [
            _message(m, "role", "content", i, roles=dict(zip(CHAT_ROLES, CHAT_ROLES))) for i, m in enumerate(value)
        ]
        if any(m["role"] != "assistant" for m in messages):
            raise RecordError(f"field {key!r}: every message of a response must have role 'assistant'")
    else:
        raise RecordError(f"field {key!r} must be a string or a non-empty list of assistant messages")
    if not any(m["content"].strip() for m in messages):
        raise RecordError(f"field {key!r} is empty")
    return messages


def _normalized(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": normalize_text(m["content"])} for m in messages]


def render_pair(
    renderer: ChatRenderer, prompt: list[dict[str, str]], responses: tuple[list[dict[str, str]], list[dict[str, str]]]
) -> list[Rendered]:
    """Each response after the prompt, trained spans on the response turns only (not on
    assistant turns inside the prompt)."""
    out = []
    for response in responses:
        rendered = renderer.render(prompt + response)
        out.append(Rendered(rendered.text, rendered.spans[-len(response) :], rendered.add_special_tokens))
    return out


def fit_pair(pair: list[tuple[np.ndarray, np.ndarray]], limit: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Both sequences cut to ``limit`` tokens: the prompt stays whole, the responses lose their ends.
    Returns (the pair, "kept" | "truncated" | "no_room")."""
    if all(len(ids) <= limit for ids, _ in pair):
        return pair, "kept"
    cut = [(ids[:limit], mask[:limit]) for ids, mask in pair]
    if any(not mask[1:].any() for _, mask in cut):
        return cut, "no_room"
    return cut, "truncated"


class PreferenceStager:
    """Each row -> pair -> rendered, encoded and fitted -> staged as two documents (chosen, rejected)."""

    template_source: str

    def __init__(self, settings: DataSettings, tokenizer: Any, report: DataReport, staging: Staging):
        self.settings, self.tokenizer, self.report, self.staging = settings, tokenizer, report, staging
        self.renderer = ChatRenderer(tokenizer)
        self.template_source = self.renderer.template_source
        self.seen: set[bytes] = set()
        self.split_values = array("d")  # one float a pair
        self.batch: list[tuple[list[Rendered], bytes]] = []

    def add(self, row: Row) -> None:
        layout = detect_layout(row.fields)
        if layout is None:
            missing = [key for key in FIELDS if key not in row.fields]
            found = ", ".join(map(str, row.fields)) or "none"
            raise UserError(
                f"{row.file}:{row.line}: not a preference record: missing {', '.join(map(repr, missing))} "
                f"(found: {found}); every record needs prompt, chosen and rejected"
            )
        formats = self.report.file_formats
        formats[row.file] = layout if formats.get(row.file, layout) == layout else "mixed"
        try:
            prompt, chosen, rejected = to_pair(row.fields)
            self.report.documents += 1
            if chosen == rejected:
                self.report.drop("chosen_equals_rejected")
                return
            rendered = render_pair(self.renderer, prompt, (chosen, rejected))
        except RecordError as exc:
            self.report.skip(row.file, row.line, f"{exc} (preference layout: {layout})")
            return
        digest = content_digest("\x00".join(r.text for r in rendered))
        if not first_seen(digest, self.seen, self.report, self.settings.dedupe):
            return
        self.batch.append((rendered, digest))
        if len(self.batch) >= 128:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        encoded = encode_rendered(self.tokenizer, [r for rendered, _ in self.batch for r in rendered])
        for i, (_, digest) in enumerate(self.batch):
            pair, verdict = fit_pair(encoded[2 * i : 2 * i + 2], self.settings.max_seq_length)
            if verdict == "no_room":
                self.report.drop("prompt_leaves_no_room")
                continue
            self.report.truncated += verdict == "truncated"
            for ids, mask in pair:
                self.staging.add(ids, mask)
            self.split_values.append(split_value(digest, self.settings.seed))
        self.batch = []

    def finish(self) -> None:
        self.flush()


def write_pairs(
    staging: Staging, split_values: array, out: Path, settings: DataSettings, pad_id: int
) -> dict[str, Any]:
    """The staged pairs into ``train`` and ``val`` `PreferencePairs` arrays; their stats."""
    docs = staging.close()
    try:
        pairs = len(docs.lengths) // 2
        is_val = assign_validation(np.asarray(split_values), settings.validation_split)
        stats: dict[str, Any] = {"pairs": {}, "tokens": {}, "target_tokens": {}}
        for split, rows in (("train", np.flatnonzero(~is_val)), ("val", np.flatnonzero(is_val))):
            shape = (len(rows), 2, settings.max_seq_length)
            tokens = np.lib.format.open_memmap(out / f"{split}.tokens.npy", "w+", np.int32, shape)
            mask = np.lib.format.open_memmap(out / f"{split}.mask.npy", "w+", np.uint8, shape)
            tokens[:] = pad_id
            mask[:] = 0
            for at, pair in enumerate(rows):
                for side in (0, 1):
                    ids, target = docs.doc(2 * int(pair) + side)
                    tokens[at, side, : len(ids)] = ids
                    mask[at, side, : len(ids)] = target
            tokens.flush()
            mask.flush()
            stats["pairs"][split] = len(rows)
            stats["tokens"][split] = (
                int(docs.lengths[np.concatenate([2 * rows, 2 * rows + 1])].sum()) if len(rows) else 0
            )
            stats["target_tokens"][split] = int(mask[:, :, 1:].sum(dtype=np.int64))
            del tokens, mask
        stats["pairs"]["total"] = pairs
        return stats
    finally:
        docs.close()
