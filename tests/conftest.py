from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny_model import EMBEDDED_DIR, build_tiny_llama


@pytest.fixture(scope="session", autouse=True)
def _pytest_temp_is_a_listed_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests' models, adapters and runs live in pytest's temp folder, outside their workspaces:
    list it in FORGELLM_ROOTS, as a user lists a scratch disk, so requests may name them. The
    security tests, whose victims live there too, build their apps with no listed roots."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGELLM_ROOTS", str(tmp_path_factory.getbasetemp()))
        yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama (2 layers, hidden 64) with the embedded tokenizer; built once per session."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 512-token byte-level BPE with SmolLM2's special tokens and chat template (fast in GGUF files)."""
    from tests.tiny_model import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    """model_type -> a tiny random model of each architecture GGUF import and export know."""
    from tests.tiny_model import ARCHITECTURES, build_tiny

    root = tmp_path_factory.mktemp("tiny-archs")
    return {
        arch: build_tiny(arch, root / f"tiny-{arch}", tokenizer_dir=tiny_tokenizer_dir, seed=i)
        for i, arch in enumerate(ARCHITECTURES)
    }


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct folder that `make setup` imports."""
    if not (EMBEDDED_DIR / "model.safetensors").exists():
        pytest.fail("the embedded model is missing: run `make setup` (forgellm models import-default)")
    return EMBEDDED_DIR


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh workspace root (FORGELLM_HOME) per test."""
    home = tmp_path / "ws"
    home.mkdir()
    monkeypatch.setenv("FORGELLM_HOME", str(home))
    monkeypatch.chdir(home)
    return home
