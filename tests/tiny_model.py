"""Tiny random models built on the fly, with the embedded model's tokenizer and chat template.

Both engines load them; they train and generate in milliseconds, so fast tests use them.
`build_tiny_llama` is the one most tests use; `build_tiny` builds the same size of model for
each architecture the GGUF import and export know.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "models" / "base" / "SmolLM2-135M-Instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# model_type -> what differs from the llama shape below (qwen2: q/k/v biases; qwen3 and gemma3:
# q/k norms; phi3: fused qkv and gate_up; gemma2: soft-capping and four norms per block).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {"head_dim": 32},  # not hidden_size / heads, as in the real Qwen3 models
    "phi3": {"original_max_position_embeddings": 512},
    "gemma2": {"query_pre_attn_scalar": 16, "sliding_window": 256},
    "gemma3_text": {"query_pre_attn_scalar": 16, "sliding_window": 256},
}


SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2 as in SmolLM2


def build_tiny_tokenizer(out: Path, *, vocab_size: int = 512) -> Path:
    """A byte-level BPE of ``vocab_size`` tokens with SmolLM2's special tokens and ChatML template.

    GGUF files carry the whole vocabulary and merges as metadata, which the ``gguf`` reader parses
    field by field: with the embedded 49k vocabulary each read takes tens of seconds, with this one
    it is instant. ``config.json`` holds only what `build_tiny` reads from it.
    """
    from tokenizers import ByteLevelBPETokenizer

    out.mkdir(parents=True, exist_ok=True)
    text = EMBEDDED_DIR.parent.parent.parent / "README.md"
    corpus = [text.read_text()] if text.exists() else []
    corpus += ["The capital of France is Paris. Hello world, how are you today?"] * 20
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(corpus, vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "model_max_length": 512,
            }
        )
    )
    shutil.copy(EMBEDDED_DIR / "chat_template.jinja", out / "chat_template.jinja")
    (out / "config.json").write_text(
        json.dumps({"vocab_size": tokenizer.get_vocab_size(), "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})
    )
    return out


def build_tiny_llama(
    out: Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2, tokenizer_dir: Path = EMBEDDED_DIR
) -> Path:
    return build_tiny("llama", out, seed=seed, hidden_size=hidden_size, layers=layers, tokenizer_dir=tokenizer_dir)


def build_tiny(
    model_type: str,
    out: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    tokenizer_dir: Path = EMBEDDED_DIR,
) -> Path:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    tok_cfg = json.loads((tokenizer_dir / "config.json").read_text())
    shape = dict(
        vocab_size=tok_cfg["vocab_size"],
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tok_cfg.get("bos_token_id"),
        eos_token_id=tok_cfg.get("eos_token_id"),
        pad_token_id=tok_cfg.get("pad_token_id"),
    )
    config = CONFIG_MAPPING[model_type](**{**shape, **ARCHITECTURES[model_type]})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.float32)
    if model_type.startswith("gemma"):
        with torch.no_grad():  # gemma's norms start at 0 (x * (1 + w)); random ones test the GGUF offset
            for name, param in model.named_parameters():
                if name.endswith("norm.weight"):
                    param.normal_(0.0, 0.1)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["rope_theta"] = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)  # mlx-lm reads it here
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    return out
