"""llama.cpp's names for byte-level BPE pre-tokenizers and the tokenizer.json split each stands for.

A GGUF file names its pre-tokenizer (``tokenizer.ggml.pre``) instead of storing it: llama.cpp
re-implements a few known splits and picks one by that name. The GGUF import reads the name back into a
tokenizer.json ``pre_tokenizer`` (transformers' GGUF reader builds a plain GPT-2 split for every
byte-level vocabulary, so SmolLM's digit-by-digit split was lost), and the GGUF export writes the name of
the split a model runs with. Both use this one table.
"""

from __future__ import annotations

from typing import Any

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
# llama-vocab.cpp quotes each of these as the "original regex from tokenizer.json"; they differ only in
# how many digits one piece holds.
_LLAMA3_STYLE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}%s| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _regex_then_bytes(regex: str) -> dict[str, Any]:
    split = {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, {**_BYTE_LEVEL, "use_regex": False}]}


# llama.cpp's name "default" is none of these: a falcon-like split that cuts punctuation runs and numbers
# apart, so a GPT-2 tokenizer needs "gpt-2".
PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    "gpt-2": _BYTE_LEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "llama-bpe": _regex_then_bytes(_LLAMA3_STYLE_REGEX % "{1,3}"),
    "qwen2": _regex_then_bytes(_LLAMA3_STYLE_REGEX % ""),
}


def gguf_pre_name(pre: dict[str, Any] | None) -> str | None:
    """llama.cpp's name for a tokenizer.json ``pre_tokenizer``, or None when it re-implements no such
    split. Compared on what changes the pieces (types, digit handling, regexes, byte-level regex use),
    not on flags like ``trim_offsets`` that only move offsets."""
    for name, known in PRE_TOKENIZERS.items():
        if _split_shape(pre) == _split_shape(known):
            return name
    return None


def _split_shape(pre: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    pre = pre or {}
    steps = (pre.get("pretokenizers") or []) if pre.get("type") == "Sequence" else [pre]
    return [
        (
            step.get("type"),
            bool(step.get("add_prefix_space", False)),
            bool(step.get("use_regex", True)),
            bool(step.get("individual_digits", False)),
            (step.get("pattern") or {}).get("Regex"),
        )
        for step in steps
    ]
