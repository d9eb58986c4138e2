"""Tiny random models of each GGUF architecture, written to GGUF files with the `gguf` package
(through ForgeLLM's exporter), for the import and export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_model import ARCHITECTURES, build_tiny, build_tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    """model_type -> a tiny random model folder with a 512-token vocabulary."""
    root = tmp_path_factory.mktemp("tiny-archs")
    return {arch: build_tiny(arch, root / f"tiny-{arch}", tokenizer_dir=tiny_tokenizer_dir, seed=i)
            for i, arch in enumerate(ARCHITECTURES)}


def gguf_of(model_dir: Path, out: Path, dtype: str = "f16") -> Path:
    from forgellm.publishing.gguf_export import write_gguf

    return write_gguf(model_dir, out, dtype=dtype, name=model_dir.name)
