"""GGUF files into Hugging Face model folders: check the file, load it with transformers'
GGUF loader (which dequantizes any quantized type), save float32 safetensors with the
tokenizer and chat template the file carries.

transformers reads a few hyperparameters from GGUF the way llama.cpp does not, so
`load_gguf` sets them back from the file before the weights load (see `_fix_config`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.errors import UserError
from forgellm.models.pre_tokenizers import PRE_TOKENIZERS, gguf_pre_name
from forgellm.models.resolve import MODEL_MARKER

log = logging.getLogger(__name__)

GEMMA3_SWA_ROPE_BASE = 10000.0  # llama.cpp's gemma3 sliding-window layers, when the file does not say
# Raised when what an import writes changes, so a folder written by an older import is redone
# (2: the file's pre-tokenizer is kept; 1 gave SmolLM a plain GPT-2 split).
IMPORTER_VERSION = 2
TOKENIZER_SCALARS = ("tokenizer.ggml.model", "tokenizer.ggml.pre")  # the tokenizer fields kept (no token lists)


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    architecture: str  # general.architecture
    name: str | None  # general.name
    file_type: str | None  # the main tensor type, e.g. Q4_K, F16
    tensor_count: int
    tokenizer: str | None  # tokenizer.ggml.model: gpt2 (byte-level BPE), llama (SentencePiece)...
    fields: dict[str, Any]  # the scalar metadata (no token lists)


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(GGUF_SUPPORTED_ARCHITECTURES)


def inspect_gguf(path: Path) -> GGUFInfo:
    """Read and check the file's header and tensor table: one clear error for a file that is not
    a GGUF, is cut short, or holds an architecture the installed transformers cannot load."""
    import gguf

    if not path.is_file():
        raise UserError(f"{path} is not a file")
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise UserError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
    try:
        reader = gguf.GGUFReader(str(path))
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    except (ValueError, IndexError, OSError, KeyError) as exc:  # numpy cannot map past the end
        raise UserError(f"{path} is truncated or damaged ({exc}); download or copy it again") from None
    if end > path.stat().st_size:
        raise UserError(
            f"{path} is truncated: its tensors need {end} bytes, the file has {path.stat().st_size}; "
            f"download or copy it again"
        )
    fields = {}
    for key, field in reader.fields.items():
        if len(field.data) == 1 and (not key.startswith("tokenizer.ggml.") or key in TOKENIZER_SCALARS):
            value = field.contents()
            fields[key] = value
    arch = fields.get("general.architecture")
    supported = supported_architectures()
    if arch not in supported:
        raise UserError(
            f"{path.name}: GGUF architecture {arch!r} cannot be loaded by the installed transformers; "
            f"supported: {', '.join(supported)}"
        )
    types = [t.tensor_type.name for t in reader.tensors if len(t.shape) > 1]
    file_type = max(set(types), key=types.count) if types else None
    return GGUFInfo(
        path,
        arch,
        fields.get("general.name"),
        file_type,
        len(reader.tensors),
        fields.get("tokenizer.ggml.model"),
        fields,
    )


def _fix_config(config: Any, info: GGUFInfo) -> None:
    """What transformers' GGUF reader leaves at its defaults although the file (or llama.cpp's
    convention for the architecture) says otherwise."""
    arch = info.architecture
    key_length = info.fields.get(f"{arch}.attention.key_length")
    if key_length and hasattr(config, "head_dim"):
        config.head_dim = int(key_length)  # qwen3 and others: not always hidden_size / heads
    if arch in ("gemma2", "gemma3"):
        # llama.cpp scales attention by 1/sqrt(head_dim) (query_pre_attn_scalar = head_dim).
        config.query_pre_attn_scalar = int(key_length or config.head_dim)
    if arch == "gemma3":
        rope = getattr(config, "rope_parameters", None) or {}
        if "sliding_attention" in rope:
            base = info.fields.get("gemma3.rope.freq_base_swa", GEMMA3_SWA_ROPE_BASE)
            rope["sliding_attention"]["rope_theta"] = float(base)


def load_gguf(path: Path, *, dtype: Any = None, progress: bool = False, info: GGUFInfo | None = None):
    """(model, tokenizer) from a GGUF file, weights dequantized to ``dtype`` (float32 by default)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    info = info or inspect_gguf(path)
    (hf_logging.enable_progress_bar if progress else hf_logging.disable_progress_bar)()
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    _fix_config(config, info)
    # A byte-level BPE vocabulary ("gpt2") loads as a generic fast tokenizer: AutoTokenizer would pick the
    # architecture's class (gemma's SentencePiece-style one), which re-splits the text its own way.
    tokenizer_class = PreTrainedTokenizerFast if info.tokenizer == "gpt2" else AutoTokenizer
    tokenizer = tokenizer_class.from_pretrained(path.parent, gguf_file=path.name)
    _restore_pre_tokenizer(tokenizer, info.fields.get("tokenizer.ggml.pre"))
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, config=config, dtype=dtype or torch.float32
    )
    return model, tokenizer


def _restore_pre_tokenizer(tokenizer: Any, name: str | None) -> None:
    """Put back the split the file names when transformers built another: its GGUF reader gives every
    byte-level vocabulary a plain GPT-2 split, so SmolLM's digit-by-digit split was lost and numbers
    came out as pieces the model was never trained on."""
    from tokenizers import Tokenizer

    known = PRE_TOKENIZERS.get(name or "")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if known is None or backend is None:
        return
    spec = json.loads(backend.to_str())
    if gguf_pre_name(spec.get("pre_tokenizer")) != name:
        backend.pre_tokenizer = Tokenizer.from_str(json.dumps({**spec, "pre_tokenizer": known})).pre_tokenizer


def imported_by_current(folder: Path) -> bool:
    """Whether ``folder`` was written by this version of the GGUF import."""
    try:
        marker = json.loads((folder / MODEL_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("importer", 1) >= IMPORTER_VERSION


def convert_gguf(path: Path, out: Path, *, source: str, progress: bool = False) -> None:
    """Write ``out`` (an existing empty folder) as a plain float32 safetensors model folder: tied
    ``lm_head`` dropped, no ``quantization_config``, tokenizer and chat template beside it."""
    from safetensors.torch import save_file

    info = inspect_gguf(path)
    model, tokenizer = load_gguf(path, progress=progress, info=info)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})

    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    config["architectures"] = [type(model).__name__]
    rope = config.get("rope_parameters") or {}
    rope = rope.get("full_attention", rope)
    if "rope_theta" in rope:
        # mlx-lm reads rope_theta from the top level (transformers 5 nests it).
        config.setdefault("rope_theta", rope["rope_theta"])
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / MODEL_MARKER).write_text(
        json.dumps(
            {
                "source": source,
                "architecture": info.architecture,
                "converted": f"dequantized {info.file_type} to float32",
                "importer": IMPORTER_VERSION,
            }
        )
        + "\n"
    )
    log.info("imported %s into %s", path.name, out)
