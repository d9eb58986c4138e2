"""Export a model folder to GGUF with the ``gguf`` package's writer, and check it.

Each architecture llama.cpp runs gets its GGUF name, hyperparameter keys and tensor names
(``gguf.get_tensor_name_map``) the way llama.cpp's ``convert_hf_to_gguf.py`` writes them:
llama and mistral as ``llama`` with its Q/K row permutation, gemma's RMS norm weights stored
as ``1 + w``. Matrices go in as F16, BF16 or Q8_0; norms and biases always as F32, as llama.cpp
does. The tokenizer (a byte-level BPE ``tokenizer.json``) goes in as ``tokenizer.ggml.*`` with
merges, special token ids and the chat template. `verify_gguf` reads the file back with
``gguf.GGUFReader`` and with transformers' GGUF loader and compares logits with the source.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.errors import UserError
from forgellm.models.pre_tokenizers import gguf_pre_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str  # gguf.MODEL_ARCH member name
    permute_qk: bool = False  # llama.cpp's rotary row order for Q/K (llama family)
    norm_plus_one: bool = False  # gemma computes x * (1 + w); llama.cpp stores 1 + w
    extra: Callable[[Any, dict[str, Any]], None] | None = None  # architecture-only keys


def _gemma2_keys(writer: Any, config: dict[str, Any]) -> None:
    writer.add_attn_logit_softcapping(float(config.get("attn_logit_softcapping") or 50.0))
    writer.add_final_logit_softcapping(float(config.get("final_logit_softcapping") or 30.0))
    writer.add_sliding_window(int(config.get("sliding_window") or 4096))


def _gemma3_keys(writer: Any, config: dict[str, Any]) -> None:
    writer.add_sliding_window(int(config.get("sliding_window") or 512))
    swa_rope = ((config.get("rope_parameters") or {}).get("sliding_attention") or {}).get("rope_theta")
    if swa_rope:
        writer.add_rope_freq_base_swa(float(swa_rope))


def _llama_keys(writer: Any, config: dict[str, Any]) -> None:
    writer.add_rope_dimension_count(_head_dim(config))


def _phi3_keys(writer: Any, config: dict[str, Any]) -> None:
    writer.add_rope_dimension_count(int(_head_dim(config) * float(config.get("partial_rotary_factor") or 1.0)))
    writer.add_rope_scaling_orig_ctx_len(
        int(config.get("original_max_position_embeddings") or config["max_position_embeddings"])
    )


# HF model_type -> how llama.cpp writes it. Mistral is a llama to llama.cpp (its converter does so).
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("LLAMA", permute_qk=True, extra=_llama_keys),
    "mistral": ArchSpec("LLAMA", permute_qk=True, extra=_llama_keys),
    "qwen2": ArchSpec("QWEN2"),
    "qwen3": ArchSpec("QWEN3"),
    "phi3": ArchSpec("PHI3", extra=_phi3_keys),
    "gemma2": ArchSpec("GEMMA2", norm_plus_one=True, extra=_gemma2_keys),
    "gemma3_text": ArchSpec("GEMMA3", norm_plus_one=True, extra=_gemma3_keys),
}
SUPPORTED = tuple(ARCHITECTURES)
TYPES = ("f16", "bf16", "q8_0")  # --gguf-type
# Round-trip tolerance on logits, as a share of the largest source logit: f16 keeps ~3 decimal digits,
# bf16 ~2, Q8_0 a scale per 32 weights (8 bits each).
TOLERANCE = {"f32": 0.02, "f16": 0.02, "bf16": 0.05, "q8_0": 0.08}


def _head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def arch_spec(config: dict[str, Any]) -> ArchSpec:
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise UserError(
            f"GGUF export supports {', '.join(SUPPORTED)} models; this one is {model_type!r}. "
            f"Publish without --gguf, or convert it with llama.cpp's convert_hf_to_gguf.py"
        )
    return ARCHITECTURES[model_type]


def write_gguf(model_dir: Path, out_file: Path, *, dtype: str = "f16", name: str | None = None) -> Path:
    """Write ``out_file`` from ``model_dir``; a failure leaves no file behind."""
    if dtype not in (*TYPES, "f32"):
        raise UserError(f"GGUF tensor type {dtype!r} is not supported: use one of {', '.join(TYPES)}")
    config = json.loads((model_dir / "config.json").read_text())
    spec = arch_spec(config)
    try:
        _write(model_dir, out_file, config, spec, dtype, name)
    except BaseException:
        out_file.unlink(missing_ok=True)
        raise
    return out_file


def _write(
    model_dir: Path, out_file: Path, config: dict[str, Any], spec: ArchSpec, dtype: str, name: str | None
) -> None:
    import gguf
    from safetensors.torch import load_file

    arch = getattr(gguf.MODEL_ARCH, spec.gguf_arch)
    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    rope = config.get("rope_parameters") or {}
    rope = rope.get("full_attention", rope)  # gemma3 nests one set per attention kind

    writer = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name or model_dir.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    if config.get("head_dim"):
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(config["vocab_size"])
    if spec.extra is not None:
        spec.extra(writer, config)
    writer.add_file_type(
        {
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "f32": gguf.LlamaFileType.ALL_F32,
        }[dtype]
    )
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, model_dir, config["vocab_size"])

    names = gguf.get_tensor_name_map(arch, n_layers)
    tensors: dict[str, Any] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(file))
    if config.get("tie_word_embeddings"):
        tensors.pop("lm_head.weight", None)  # llama.cpp reuses token_embd when output is absent
    for key in sorted(tensors):
        if key.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(
                f"tensor {key} has no GGUF name for {config['model_type']}: the model has parts "
                f"this exporter does not know"
            )
        data = tensors[key].float().numpy()
        if spec.permute_qk and key.endswith("q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif spec.permute_qk and key.endswith("k_proj.weight"):
            data = _permute(data, n_head, n_kv)
        if spec.norm_plus_one and key.endswith("norm.weight"):
            data = data + 1.0
        _add_tensor(writer, gguf_name, data, dtype)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=True)
    writer.close()


def _add_tensor(writer: Any, name: str, data: np.ndarray, dtype: str) -> None:
    """Vectors stay F32; matrices take the asked type (Q8_0 needs rows in blocks of 32: F16 otherwise)."""
    import gguf

    if data.ndim == 1 or dtype == "f32":
        writer.add_tensor(name, data.astype(np.float32))
    elif dtype == "f16" or (
        dtype == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    ):
        writer.add_tensor(name, data.astype(np.float16))
    else:
        qtype = gguf.GGMLQuantizationType.BF16 if dtype == "bf16" else gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's rotary layout for Q/K rows (convert_hf_to_gguf.py LlamaModel.permute)."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _add_tokenizer(writer: Any, model_dir: Path, vocab_size: int) -> None:
    import gguf

    spec = _tokenizer_spec(model_dir)
    if (spec.get("model") or {}).get("type") != "BPE":
        raise UserError(
            "GGUF export needs a byte-level BPE tokenizer.json (GPT-2 style); this model's tokenizer "
            "is not one. Publish without --gguf"
        )
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
    writer.add_tokenizer_pre(_pre_tokenizer(spec.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if special.chat_template is None and (model_dir / "chat_template.jinja").exists():
        special.chat_template = (model_dir / "chat_template.jinja").read_text()  # transformers 5 keeps it apart
    special.add_to_gguf(writer)


def _tokenizer_spec(model_dir: Path) -> dict[str, Any]:
    """The tokenizer the model runs with, as tokenizer.json: what transformers builds, not the file.

    A model type's tokenizer class may replace the file's pre-tokenizer (transformers 5's
    Qwen2Tokenizer puts Qwen's digit-by-digit split over a plain GPT-2 one), and the GGUF must
    tokenize as training and `forgellm chat` did.
    """
    if not (model_dir / "tokenizer.json").exists():
        return {}
    from transformers import AutoTokenizer

    backend = getattr(AutoTokenizer.from_pretrained(model_dir), "backend_tokenizer", None)
    return json.loads(backend.to_str()) if backend is not None else {}


def _pre_tokenizer(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for a tokenizer.json ``pre_tokenizer``.

    llama.cpp splits text with its own copy of a few known regexes chosen by this name, so the
    name must say exactly what the HF pre-tokenizer does; an unknown one is refused rather than
    written as a split that tokenizes differently.
    """
    name = gguf_pre_name(pre)
    if name is None:
        raise UserError(
            f"GGUF export knows the byte-level BPE pre-tokenizers of GPT-2, SmolLM, Llama 3 and Qwen2; this "
            f"tokenizer.json's is {json.dumps(pre or {})[:120]}. Publish without --gguf, or convert it with "
            f"llama.cpp's convert_hf_to_gguf.py"
        )
    return name


def export_into(model_dir: Path, folder: Path, *, name: str, dtype: str = "f16") -> dict[str, Any]:
    """``NAME-TYPE.gguf`` (verified) and an Ollama ``Modelfile`` into ``folder``, the model's own
    folder or an empty one; returns the verification numbers with the file names."""
    from forgellm.publishing.ollama import chat_template, modelfile, template_family

    gguf_file = write_gguf(model_dir, folder / f"{name}-{dtype}.gguf", dtype=dtype, name=name)
    try:
        checked = verify_gguf(gguf_file, model_dir, dtype=dtype)
    except BaseException:
        gguf_file.unlink(missing_ok=True)
        raise
    (folder / "Modelfile").write_text(modelfile(model_dir, gguf_file.name))
    family = template_family(chat_template(model_dir))
    return {
        "file": gguf_file.name,
        "type": dtype,
        "modelfile": "Modelfile",
        "template": family.name if family else None,
        **checked,
    }


def export_model(
    model: str, *, dtype: str = "f16", out: Path | None = None, name: str | None = None, workspace: Any = None
) -> tuple[Path, dict[str, Any]]:
    """``forgellm export gguf``: a model folder (not an adapter) to ``out`` (default
    ``models/published/NAME-gguf``) holding the GGUF file and a Modelfile."""
    from forgellm.models.resolve import resolve
    from forgellm.publishing.staging import staged_folder
    from forgellm.workspace import Workspace

    workspace = workspace or Workspace.current()
    info = resolve(model, workspace)
    if info.is_adapter or not (info.path / "config.json").exists():
        raise UserError(
            f"{model} is an adapter or a run, not a model: `forgellm publish` it (or `forgellm fuse`), "
            f"then export the fused model"
        )
    if dtype not in TYPES:
        raise UserError(f"--type {dtype!r} is not one of {', '.join(TYPES)}")
    arch_spec(json.loads((info.path / "config.json").read_text()))  # refuse before any folder exists
    name = name or info.path.name
    out = out or workspace.models("published") / f"{name}-gguf"
    with staged_folder(out) as staging:
        result = export_into(info.path, staging, name=name, dtype=dtype)
    return out, result


def verify_gguf(
    gguf_file: Path, model_dir: Path, *, dtype: str = "f16", text: str = "The capital of France is"
) -> dict[str, Any]:
    """Read ``gguf_file`` back the way `forgellm models import` does; its logits must match ``model_dir``'s.

    Returns ``{"tensors", "max_abs_diff", "same_argmax"}``; raises UserError when they differ by more
    than `TOLERANCE` for ``dtype``.
    """
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forgellm.models.gguf_import import inspect_gguf, load_gguf

    spec = arch_spec(json.loads((model_dir / "config.json").read_text()))
    expected_arch = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, spec.gguf_arch)]
    info = inspect_gguf(gguf_file)
    if info.architecture != expected_arch:
        raise UserError(f"{gguf_file} reads back as a {info.architecture} GGUF, not {expected_arch}")
    ids = AutoTokenizer.from_pretrained(model_dir)(text, return_tensors="pt").input_ids
    with torch.no_grad():
        source = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(ids).logits
        loaded = load_gguf(gguf_file, info=info)[0](ids).logits
    diff = float((source - loaded).abs().max())
    scale = float(source.abs().max()) or 1.0
    same_argmax = bool(torch.equal(source.argmax(-1), loaded.argmax(-1)))
    if diff > TOLERANCE[dtype] * scale:
        raise UserError(
            f"the GGUF file {gguf_file.name} gives different logits from the model "
            f"(max difference {diff:.4g} on a scale of {scale:.4g}); it was not kept"
        )
    return {"tensors": info.tensor_count, "max_abs_diff": diff, "same_argmax": same_argmax}
