"""`forgellm export gguf` and `publish --gguf-type`: each architecture and tensor type round-trips
through a GGUF file (read back by `forgellm models import`, i.e. transformers' GGUF loader), with
llama.cpp's names; the Ollama Modelfile translates the chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli_helpers import forgellm
from tests.tiny_model import ARCHITECTURES

# Largest logit difference after the round trip, as a share of the largest logit. F16 keeps about
# three decimal digits, BF16 about two; Q8_0 stores 8 bits per weight with one scale per 32.
TOLERANCE = {"f16": 0.005, "bf16": 0.03, "q8_0": 0.05}
GGUF_ARCH = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "phi3": "phi3",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
}
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def logits(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(model_dir)("Hello world, how are you today", return_tensors="pt").input_ids
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(ids).logits


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_each_architecture_and_type_round_trips(arch, dtype, workspace, tiny_models, tmp_path):
    import gguf

    source = tiny_models[arch]
    code, out, err = forgellm(
        "export", "gguf", str(source), "--type", dtype, "--name", "tiny", "--out", str(tmp_path / "out")
    )
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", f"tiny-{dtype}.gguf"]
    reader = gguf.GGUFReader(str(folder / f"tiny-{dtype}.gguf"))
    arch_name = GGUF_ARCH[arch]
    assert reader.get_field("general.architecture").contents() == arch_name
    assert reader.get_field(f"{arch_name}.block_count").contents() == 2
    # llama.cpp re-implements the pre-tokenizer it is named: the tiny tokenizer's is GPT-2's, but
    # transformers' Qwen2Tokenizer replaces it with Qwen's, and the GGUF must split text as it does
    assert reader.get_field("tokenizer.ggml.pre").contents() == ("qwen2" if arch == "qwen2" else "gpt-2")
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.1.attn_norm.weight"} <= names
    assert ("blk.0.attn_qkv.weight" if arch == "phi3" else "blk.0.attn_q.weight") in names
    matrix_types = {t.tensor_type.name for t in reader.tensors if len(t.shape) > 1}
    assert matrix_types == {dtype.upper()} and {t.tensor_type.name for t in reader.tensors if len(t.shape) == 1} == {
        "F32"
    }

    code, out, err = forgellm("models", "import", str(folder / f"tiny-{dtype}.gguf"), "--name", "back")
    assert code == 0, err
    a, b = logits(source), logits(workspace / "models/base/back")
    assert float((a - b).abs().max()) <= TOLERANCE[dtype] * float(a.abs().max())


def test_unmapped_architecture_is_refused_with_the_list(workspace, tiny_models, tmp_path):
    model = shutil.copytree(tiny_models["llama"], tmp_path / "odd")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "starcoder2"}))
    code, _, err = forgellm("export", "gguf", str(model), "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        "GGUF export supports llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3_text models; this one is "
        "'starcoder2'" in err
    )
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_tokenizer_llama_cpp_would_split_differently_is_refused(workspace, tiny_models, tmp_path):
    model = shutil.copytree(tiny_models["llama"], tmp_path / "spm")
    spec = json.loads((model / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    (model / "tokenizer.json").write_text(json.dumps(spec))
    code, _, err = forgellm("export", "gguf", str(model), "--out", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "GGUF export knows the byte-level BPE pre-tokenizers of GPT-2, SmolLM, Llama 3 and Qwen2" in err
    assert "Metaspace" in err and not (tmp_path / "out").exists()


def test_modelfile_translates_chatml_with_its_default_system_prompt(workspace, tiny_models, tmp_path):
    code, out, err = forgellm("export", "gguf", str(tiny_models["qwen2"]), "--out", str(tmp_path / "out"))
    assert code == 0, err
    text = (tmp_path / "out/Modelfile").read_text()
    assert text.splitlines()[1] == "FROM ./tiny-qwen2-f16.gguf"
    assert "<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>" in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER num_ctx 512" in text
    assert "chat template: chatml" in out


def test_modelfile_translates_llama3_and_leaves_unknown_templates_to_ollama(workspace, tiny_models, tmp_path):
    model = shutil.copytree(tiny_models["llama"], tmp_path / "l3")
    (model / "chat_template.jinja").write_text(LLAMA3_TEMPLATE)
    assert forgellm("export", "gguf", str(model), "--out", str(tmp_path / "a"))[0] == 0
    text = (tmp_path / "a/Modelfile").read_text()
    assert "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>" in text
    assert 'PARAMETER stop "<|eot_id|>"' in text and "SYSTEM" not in text

    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
    )
    assert forgellm("export", "gguf", str(model), "--out", str(tmp_path / "b"))[0] == 0
    text = (tmp_path / "b/Modelfile").read_text()
    assert "TEMPLATE \"\"\"" not in text and "Ollama uses the GGUF's own" in text
