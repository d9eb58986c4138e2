"""GGUF files of the tiny test models, written with the `gguf` package through ForgeLLM's exporter."""

from __future__ import annotations

from pathlib import Path


def gguf_of(model_dir: Path, out: Path, dtype: str = "f16") -> Path:
    from forgellm.publishing.gguf_export import write_gguf

    return write_gguf(model_dir, out, dtype=dtype, name=model_dir.name)
