"""`forgellm models import`: GGUF files of each architecture, LM Studio and Ollama folders, HF
folders; then the imported models generate and train on both engines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from forgellm.models.pre_tokenizers import PRE_TOKENIZERS, gguf_pre_name
from tests.cli_helpers import forgellm
from tests.gguf_helpers import TOKENIZER_TEXTS, gguf_of
from tests.tiny_model import ARCHITECTURES
from tests.training_helpers import prepared_data, tiny_config_values, write_config


def logits(model_dir: Path, text: str = "Hello world, how are you"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dir)(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(ids).logits


def imported(workspace: Path, *args: str) -> Path:
    code, out, err = forgellm("models", "import", *args)
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_gguf_of_each_architecture_imports_with_its_tokenizer_and_logits(arch, workspace, tiny_models, tmp_path):
    source = tiny_models[arch]
    model = imported(workspace, str(gguf_of(source, tmp_path / f"{arch}.gguf")), "--name", arch)
    assert model == workspace / "models/base" / arch
    assert {"model.safetensors", "config.json", "tokenizer.json", ".forgellm-model"} <= {
        p.name for p in model.iterdir()
    }
    assert "im_start" in (model / "chat_template.jinja").read_text()  # the chat template came through the GGUF
    a, b = logits(source), logits(model)
    assert float((a - b).abs().max()) < 0.02 * float(a.abs().max())  # f16 in the file
    assert not [p for p in model.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


@pytest.mark.parametrize("pre", list(PRE_TOKENIZERS))
def test_gguf_import_splits_text_as_the_pre_tokenizer_the_file_names(pre, workspace, tiny_models, tmp_path):
    # transformers' GGUF reader gives every byte-level vocabulary a plain GPT-2 split: SmolLM's
    # digit-by-digit split (the embedded model's) was lost until the import put it back.
    from transformers import AutoTokenizer

    source = shutil.copytree(tiny_models["llama"], tmp_path / "source")
    spec = json.loads((source / "tokenizer.json").read_text())
    (source / "tokenizer.json").write_text(json.dumps({**spec, "pre_tokenizer": PRE_TOKENIZERS[pre]}))
    model = imported(workspace, str(gguf_of(source, tmp_path / f"{pre}.gguf")), "--name", pre)
    assert gguf_pre_name(json.loads((model / "tokenizer.json").read_text())["pre_tokenizer"]) == pre
    expected, got = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(model)
    for text in TOKENIZER_TEXTS:
        assert got(text).input_ids == expected(text).input_ids, text


def test_import_default_redoes_a_folder_an_older_import_wrote(workspace):
    code, out, err = forgellm("models", "import-default")
    assert code == 0, err
    model = Path(out.strip().splitlines()[-1])
    spec = json.loads((model / "tokenizer.json").read_text())
    assert gguf_pre_name(spec["pre_tokenizer"]) == "smollm"  # as the original SmolLM2 and llama.cpp split
    marker = json.loads((model / ".forgellm-model").read_text())
    weights_written = (model / "model.safetensors").stat().st_mtime_ns

    assert forgellm("models", "import-default")[0] == 0  # current: left untouched
    assert (model / "model.safetensors").stat().st_mtime_ns == weights_written

    # What the first import wrote: no version in the marker, a plain GPT-2 split.
    (model / ".forgellm-model").write_text(json.dumps({k: v for k, v in marker.items() if k != "importer"}))
    (model / "tokenizer.json").write_text(json.dumps({**spec, "pre_tokenizer": PRE_TOKENIZERS["gpt-2"]}))
    assert forgellm("models", "import-default")[0] == 0
    assert gguf_pre_name(json.loads((model / "tokenizer.json").read_text())["pre_tokenizer"]) == "smollm"
    assert json.loads((model / ".forgellm-model").read_text()) == marker


@pytest.mark.slow  # two engines train three architectures: about two minutes
@pytest.mark.parametrize("engine", ["torch", "mlx"])
@pytest.mark.parametrize("arch", ["qwen2", "gemma2", "phi3"])
def test_imported_model_generates_and_trains(arch, engine, workspace, tiny_models, tmp_path):
    model = imported(workspace, str(gguf_of(tiny_models[arch], tmp_path / f"{arch}.gguf", "q8_0")))
    code, out, err = forgellm(
        "cli",
        "generate",
        "--model",
        str(model),
        "--engine",
        engine,
        "--format",
        "raw",
        "--prompt",
        "Hello",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
    )
    assert code == 0 and out.strip(), err
    prepared_data(workspace / "prepared", length=32, vocab=512)
    config = write_config(
        workspace / "c.yaml",
        **tiny_config_values(model, engine=engine, max_iterations=3, steps_per_eval=3, run_name="r"),
    )
    code, out, err = forgellm("train", "--config", str(config))
    assert code == 0, err
    assert (workspace / "models/cpt/r/final").is_dir()


def test_quantized_gguf_imports_dequantized(workspace, tiny_models, tmp_path):
    source = tiny_models["llama"]
    model = imported(workspace, str(gguf_of(source, tmp_path / "q.gguf", "q8_0")), "--name", "q8")
    marker = json.loads((model / ".forgellm-model").read_text())
    assert marker["converted"] == "dequantized Q8_0 to float32" and marker["architecture"] == "llama"
    a, b = logits(source), logits(model)
    assert 0 < float((a - b).abs().max()) < 0.08 * float(a.abs().max())


def test_lmstudio_and_ollama_models_are_listed_and_imported_by_name(workspace, tiny_models, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    lms = home / ".lmstudio/models/tiny-org/Tiny-GGUF"
    lms.mkdir(parents=True)
    gguf_of(tiny_models["qwen2"], lms / "tiny-qwen2-F16.gguf")
    ollama = home / ".ollama/models"
    (ollama / "blobs").mkdir(parents=True)
    blob = gguf_of(tiny_models["llama"], tmp_path / "llama.gguf")
    digest = "sha256:" + "ab" * 32
    shutil.move(blob, ollama / "blobs" / digest.replace(":", "-"))
    manifest = ollama / "manifests/registry.ollama.ai/library/tinyllama/1b"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps(
            {
                "layers": [
                    {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "cd" * 32},
                    {"mediaType": "application/vnd.ollama.image.model", "digest": digest},
                ]
            }
        )
    )

    code, out, err = forgellm("models", "list", "--json")
    assert code == 0, err
    listed = {m["name"]: m for m in json.loads(out) if m.get("importable")}
    assert set(listed) == {"lmstudio:tiny-org/Tiny-GGUF/tiny-qwen2-F16.gguf", "ollama:tinyllama:1b"}
    code, out, _ = forgellm("models", "list")
    assert "ollama:tinyllama:1b" in out and "importable" in out

    model = imported(workspace, "ollama:tinyllama:1b")
    assert model.name == "tinyllama-1b" and json.loads((model / "config.json").read_text())["model_type"] == "llama"
    model = imported(workspace, "lmstudio:tiny-org/Tiny-GGUF/tiny-qwen2-F16.gguf", "--name", "lq")
    assert json.loads((model / "config.json").read_text())["model_type"] == "qwen2"


def test_ollama_manifest_with_a_missing_blob_is_one_clear_line(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    manifest = tmp_path / "ollama/manifests/registry.ollama.ai/library/gone/latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "ef" * 32}]})
    )
    code, out, err = forgellm("models", "import", "ollama:gone")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "points to blob sha256:efef" in err and "is missing" in err and "ollama pull" in err
    assert not (workspace / "models/base").exists() or not list((workspace / "models/base").iterdir())


def test_truncated_gguf_is_one_clear_line_and_leaves_nothing(workspace, tiny_models, tmp_path):
    whole = gguf_of(tiny_models["llama"], tmp_path / "whole.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    code, _, err = forgellm("models", "import", str(cut))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "truncated" in err
    assert not (workspace / "models/base/cut").exists()
    assert not [p for p in (workspace / "models/base").iterdir()]


def test_unsupported_architecture_is_one_clear_line(workspace, tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "rwkv6")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    code, _, err = forgellm("models", "import", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "GGUF architecture 'rwkv6' cannot be loaded" in err and "qwen3" in err


def test_hf_folder_is_copied_or_linked(workspace, tiny_models):
    source = tiny_models["llama"]
    copied = imported(workspace, str(source), "--name", "copy")
    assert not copied.is_symlink() and (copied / "model.safetensors").exists()
    linked = imported(workspace, str(source), "--name", "link", "--link")
    assert linked.is_symlink() and linked.resolve() == source.resolve()
    code, _, err = forgellm("models", "import", str(source), "--name", "copy")
    assert code == 2 and "exists" in err
