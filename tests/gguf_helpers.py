"""GGUF files of the tiny test models, written with the `gguf` package through ForgeLLM's exporter."""

from __future__ import annotations

from pathlib import Path

# Strings whose tokenization depends on the pre-tokenizer: digits, punctuation runs, spaces,
# newlines, non-ASCII, contractions, and a special token in the text.
TOKENIZER_TEXTS = (
    "Hello world, how are you today?",
    "In 2024 we sold 1234567 units (+12.5%)!!",
    "  two  spaces,\n\nnew lines\tand a tab",
    "café naïve — 日本語 🙂",
    "I'm sure they'll say it's fine; we've done it.",
    "<|im_start|>user\nHi<|im_end|>",
)


def gguf_of(model_dir: Path, out: Path, dtype: str = "f16") -> Path:
    from forgellm.publishing.gguf_export import write_gguf

    return write_gguf(model_dir, out, dtype=dtype, name=model_dir.name)
