"""A tiny random llama built on the fly, with the embedded model's tokenizer and chat template.

Both engines load it; it trains and generates in milliseconds, so fast tests use it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "models" / "base" / "SmolLM2-135M-Instruct"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def build_tiny_llama(out: Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2,
                     tokenizer_dir: Path = EMBEDDED_DIR) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok_cfg = json.loads((tokenizer_dir / "config.json").read_text())
    config = LlamaConfig(
        vocab_size=tok_cfg["vocab_size"], hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden_size // 4,
        max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=tok_cfg.get("bos_token_id"), eos_token_id=tok_cfg.get("eos_token_id"),
        pad_token_id=tok_cfg.get("pad_token_id"),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["rope_theta"] = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)  # mlx-lm reads it here
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    return out
