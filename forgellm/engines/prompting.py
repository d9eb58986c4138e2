"""Prompt formatting and encoding, shared by both engines so they see identical token ids.

Both engines expose the model's Hugging Face tokenizer; the chat template that ships with
the model decides how a conversation is written, never a template of our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError

from forgellm.engines.base import Message, PromptFormat
from forgellm.errors import UserError

PROMPT_FORMATS: tuple[PromptFormat, ...] = ("chat", "raw")
ROLES = ("system", "user", "assistant")


def to_messages(prompt: str | Sequence[Message]) -> list[Message]:
    """A prompt string becomes one user turn; a conversation is checked and copied."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = []
    for i, message in enumerate(prompt):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str):
            raise UserError(f"message {i} is not valid: expected a role in {', '.join(ROLES)} and a text content")
        messages.append({"role": role, "content": content})
    return messages


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _template_source(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None) or ""
    return " ".join(template.values()) if isinstance(template, dict) else str(template)


def format_prompt(
    tokenizer: Any,
    prompt: str | Sequence[Message],
    *,
    system: str | None = None,
    fmt: PromptFormat | None = None,
    enable_thinking: bool = False,
) -> str:
    """The text to generate from.

    ``chat`` applies the tokenizer's chat template with a generation prompt; ``raw`` is plain
    continuation. Without ``fmt``: chat when the tokenizer has a template (instruct models),
    raw otherwise (base models). ``system`` replaces any system turn of the conversation.
    """
    messages = to_messages(prompt)
    if not any(m["content"].strip() for m in messages if m["role"] != "system"):
        raise UserError("the prompt is empty: give some text to complete or a question to answer")
    if fmt is None:
        fmt = "chat" if has_chat_template(tokenizer) else "raw"
    if fmt not in PROMPT_FORMATS:
        raise UserError(f"unknown prompt format {fmt!r}: use one of {', '.join(PROMPT_FORMATS)}")
    if system is not None:
        messages = [m for m in messages if m["role"] != "system"]
        if system.strip():
            messages.insert(0, {"role": "system", "content": system})
    if fmt == "raw":
        return raw_text(messages)
    if not has_chat_template(tokenizer):
        raise UserError("this model has no chat template (a base model): use --format raw, or an instruct model")
    return _apply_chat_template(tokenizer, messages, enable_thinking=enable_thinking)


def raw_text(messages: Sequence[Message]) -> str:
    """A conversation as plain text: turns on their own lines, except that an assistant turn
    continues the text before it (a base model's answer is a continuation)."""
    text = ""
    for message in messages:
        content = message["content"]
        if message["role"] == "assistant" or not text:
            text += content
        else:
            text += ("" if text.endswith("\n") else "\n") + content
        if message["role"] == "system":
            text += "\n\n"
    return text


def _apply_chat_template(tokenizer: Any, messages: list[Message], *, enable_thinking: bool) -> str:
    # Qwen-style templates read `enable_thinking`; others never see it.
    extra = {"enable_thinking": enable_thinking} if "enable_thinking" in _template_source(tokenizer) else {}
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra)
    except TemplateError as exc:
        if messages[0]["role"] != "system":
            raise UserError(f"the model's chat template rejected the conversation: {exc}") from exc
    # Gemma-style templates reject a system turn: the system prompt goes in front of the first user turn.
    system, rest = messages[0]["content"], messages[1:]
    first_user = next((i for i, m in enumerate(rest) if m["role"] == "user"), None)
    if first_user is None:
        rest.insert(0, {"role": "user", "content": system})
    else:
        rest[first_user] = {"role": "user", "content": f"{system}\n\n{rest[first_user]['content']}"}
    try:
        return tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=True, **extra)
    except TemplateError as exc:
        raise UserError(f"the model's chat template rejected the conversation: {exc}") from exc


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a formatted prompt. Special tokens (BOS) are added only when the text does
    not already start with them, as chat templates usually write BOS themselves."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = bos is None or not text.startswith(bos)
    return list(tokenizer.encode(text, add_special_tokens=add_special))
