"""Real LoRA adapters for the tiny test models, in each engine's own format.

They are built with the libraries' own code (PEFT, mlx-lm), exactly as a trainer would save them.
"""

from __future__ import annotations

import json
from pathlib import Path

LORA_KEYS = ("self_attn.q_proj", "self_attn.v_proj")


def build_peft_adapter(base_dir: Path, out: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """A PEFT LoRA adapter for ``base_dir`` with random (non-zero) weights, so it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=[k.split(".")[-1] for k in LORA_KEYS],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    adapter_cfg["base_model_name_or_path"] = str(base_dir)
    (out / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
    return out


def build_mlx_adapter(base_dir: Path, out: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """An mlx-lm LoRA adapter (adapter_config.json + adapters.safetensors) for ``base_dir``, with random weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    mx.random.seed(seed)
    model, _ = load(str(base_dir))
    model.freeze()
    layers = len(model.layers)
    lora = {"rank": rank, "scale": 10.0, "dropout": 0.0, "keys": list(LORA_KEYS)}
    linear_to_lora_layers(model, layers, lora)
    weights = dict(tree_flatten(model.trainable_parameters()))
    # mlx-lm starts lora_b at zero (no effect); random values make the adapter visible in the output.
    weights = {k: mx.random.normal(v.shape) * 0.5 if k.endswith("lora_b") else v for k, v in weights.items()}
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), weights)
    (out / "adapter_config.json").write_text(
        json.dumps(
            {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": lora, "model": str(base_dir)}, indent=2
        )
    )
    return out
