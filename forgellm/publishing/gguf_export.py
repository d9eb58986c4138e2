"""Export a llama-family model folder to GGUF with the ``gguf`` package's writer, and check it.

Tensors get llama.cpp's names (``gguf.get_tensor_name_map``) and its Q/K row permutation;
matrices are written as f16 (or f32), norms always as f32, the way llama.cpp's converter does.
The tokenizer (a byte-level BPE ``tokenizer.json``) goes in as ``tokenizer.ggml.*`` with
merges, special token ids and the chat template. `verify_gguf` reads the file back with
``gguf.GGUFReader`` and with transformers' GGUF loader and compares logits with the source.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.errors import UserError

log = logging.getLogger(__name__)

SUPPORTED = ("llama",)  # the architectures whose tensor layout this writer knows


def write_gguf(model_dir: Path, out_file: Path, *, dtype: str = "f16", name: str | None = None) -> Path:
    import gguf
    from safetensors.torch import load_file

    config = json.loads((model_dir / "config.json").read_text())
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise UserError(f"GGUF export supports {', '.join(SUPPORTED)} models; this one is {model_type!r}. "
                        f"Publish without --gguf, or convert it with llama.cpp's convert_hf_to_gguf.py")
    if dtype not in ("f16", "f32"):
        raise UserError(f"GGUF tensor type {dtype!r} is not supported: use f16 or f32")
    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    rope = config.get("rope_parameters") or {}

    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_name(name or model_dir.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0))
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, model_dir, config["vocab_size"])

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    tensors: dict[str, Any] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(file))
    for key in sorted(tensors):
        if key.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"tensor {key} has no GGUF name for llama: the model has parts this exporter does not know")
        data = tensors[key].float().numpy()
        if key.endswith("q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, n_head, n_kv)
        data = data.astype(np.float16 if dtype == "f16" and data.ndim > 1 else np.float32)
        writer.add_tensor(gguf_name, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's rotary layout for Q/K rows (convert_hf_to_gguf.py LlamaModel.permute)."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _add_tokenizer(writer: Any, model_dir: Path, vocab_size: int) -> None:
    import gguf

    spec_path = model_dir / "tokenizer.json"
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
    if (spec.get("model") or {}).get("type") != "BPE":
        raise UserError("GGUF export needs a byte-level BPE tokenizer.json (GPT-2 style); this model's tokenizer "
                        "is not one. Publish without --gguf")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for text, index in spec["model"]["vocab"].items():
        if index < vocab_size:
            tokens[index], types[index] = text, gguf.TokenType.NORMAL
    for added in spec.get("added_tokens", []):
        if added["id"] < vocab_size:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gpt2")
    # llama.cpp picks a pre-tokenizer by name; "default" is its GPT-2 style split.
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if special.chat_template is None and (model_dir / "chat_template.jinja").exists():
        special.chat_template = (model_dir / "chat_template.jinja").read_text()  # transformers 5 keeps it apart
    special.add_to_gguf(writer)


def verify_gguf(gguf_file: Path, model_dir: Path, *, text: str = "The capital of France is") -> dict[str, Any]:
    """Read ``gguf_file`` back with GGUFReader and transformers; its logits must match ``model_dir``'s.

    Returns ``{"tensors", "max_abs_diff", "same_argmax"}``; raises UserError when they disagree.
    """
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    reader = gguf.GGUFReader(str(gguf_file))
    arch = reader.get_field("general.architecture")
    if arch is None or bytes(arch.parts[arch.data[0]]).decode() != "llama" or not reader.tensors:
        raise UserError(f"{gguf_file} does not read back as a llama GGUF with tensors")
    hf_logging.disable_progress_bar()
    ids = AutoTokenizer.from_pretrained(model_dir)(text, return_tensors="pt").input_ids
    with torch.no_grad():
        source = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(ids).logits
        loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name,
                                                      dtype=torch.float32)(ids).logits
    diff = float((source - loaded).abs().max())
    scale = float(source.abs().max()) or 1.0
    same_argmax = bool(torch.equal(source.argmax(-1), loaded.argmax(-1)))
    if diff > 0.02 * scale:
        raise UserError(f"the GGUF file {gguf_file.name} gives different logits from the model "
                        f"(max difference {diff:.4g} on a scale of {scale:.4g}); it was not kept")
    return {"tensors": len(reader.tensors), "max_abs_diff": diff, "same_argmax": same_argmax}
