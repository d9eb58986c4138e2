"""Model resolution and detection, through the same CLI users run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from forgellm.errors import NotFoundError, UserError
from forgellm.models.resolve import describe, resolve
from forgellm.workspace import Workspace


def test_resolves_path_name_and_alias(workspace: Path, tiny_model_dir: Path) -> None:
    ws = Workspace.current().ensure()
    shutil.copytree(tiny_model_dir, ws.models("base") / "tiny")
    by_name = resolve("tiny", ws)
    assert by_name.path == (ws.models("base") / "tiny").resolve() and by_name.source == "base"
    assert resolve("base/tiny", ws).path == by_name.path
    assert resolve(str(tiny_model_dir), ws).path == tiny_model_dir.resolve()
    shutil.copytree(tiny_model_dir, ws.models("base") / "SmolLM2-135M-Instruct")
    assert resolve("default", ws).name == "SmolLM2-135M-Instruct"


def test_unknown_model_lists_every_place_searched(workspace: Path) -> None:
    with pytest.raises(NotFoundError) as err:
        resolve("no-such-model", Workspace.current())
    message = str(err.value)
    assert "no-such-model" in message and "models/base/no-such-model" in message
    assert "models/published/no-such-model" in message


def test_empty_name_is_refused(workspace: Path) -> None:
    with pytest.raises(UserError, match="empty"):
        resolve("  ")


def test_hub_id_resolves_from_local_cache_only(workspace: Path, tiny_model_dir: Path, monkeypatch, tmp_path) -> None:
    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny" / "snapshots" / "abc123"
    shutil.copytree(tiny_model_dir, snap)
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    info = resolve("acme/tiny")
    assert info.source == "hf-cache" and info.path == snap.resolve()
    with pytest.raises(NotFoundError, match="acme/absent"):
        resolve("acme/absent")


def test_detection_of_model_and_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    info = describe(tiny_model_dir)
    assert info.architecture == "LlamaForCausalLM" and info.model_type == "llama"
    assert info.context_length == 512 and info.is_instruct and not info.is_adapter
    assert info.num_parameters and info.num_parameters > 3_000_000
    base = tmp_path / "base-copy"
    shutil.copytree(tiny_model_dir, base)
    (base / "chat_template.jinja").unlink()
    tok_cfg = json.loads((base / "tokenizer_config.json").read_text())
    tok_cfg.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    assert not describe(base).is_instruct
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "default"})
    )
    a = describe(adapter)
    assert a.is_adapter and a.adapter_format == "peft" and a.base_model == "default"


def test_embedded_model_is_imported_as_plain_safetensors(embedded_model_dir: Path) -> None:
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["rope_theta"] == 100000.0
    info = describe(embedded_model_dir)
    assert info.is_instruct and info.dtype == "float32"
    assert 130e6 < info.num_parameters < 140e6  # 134.5M with the tied lm_head dropped
