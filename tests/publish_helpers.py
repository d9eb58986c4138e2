"""Real adapters on the tiny model (PEFT and mlx-lm formats) and logits/greedy helpers for both engines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PROMPT = "The capital of France is"
TARGETS = ["q_proj", "v_proj", "down_proj"]


def make_peft_adapter(
    base: Path, out: Path, *, seed: int = 0, rank: int = 4, alpha: float = 8.0, layers: list[int] | None = None
) -> Path:
    """A PEFT LoRA adapter whose B weights are random, so it changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=TARGETS,
        lora_dropout=0.0,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    peft_model.save_pretrained(out)
    return out


def make_mlx_adapter(
    base: Path,
    out: Path,
    *,
    seed: int = 0,
    rank: int = 4,
    scale: float = 2.0,
    num_layers: int = 2,
    keys: list[str] | None = None,
) -> Path:
    """An mlx-lm LoRA adapter saved the way ``mlx_lm.lora`` saves one, with random B weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    model, _ = load(str(base))
    model.freeze()
    params = {
        "rank": rank,
        "scale": scale,
        "dropout": 0.0,
        "keys": keys or ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"],
    }
    mx.random.seed(seed)
    linear_to_lora_layers(model, num_layers, params)
    trainable = dict(tree_flatten(model.trainable_parameters()))
    for name, value in trainable.items():
        if name.endswith("lora_b"):
            trainable[name] = mx.random.normal(value.shape) * 0.2
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), trainable)
    (out / "adapter_config.json").write_text(
        json.dumps(
            {"fine_tune_type": "lora", "num_layers": num_layers, "lora_parameters": params, "model": str(base)},
            indent=2,
        )
    )
    return out


def torch_logits(model_dir: Path, adapter: Path | None = None, text: str = PROMPT) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        ids = tok(text, return_tensors="pt").input_ids
        return model(ids).logits[0].float().numpy()


def mlx_logits(model_dir: Path, adapter: Path | None = None, text: str = PROMPT) -> np.ndarray:
    import mlx.core as mx
    from mlx_lm.utils import load

    model, tok = load(str(model_dir), adapter_path=str(adapter) if adapter else None)
    ids = mx.array([tok.encode(text)])
    return np.array(model(ids)[0].astype(mx.float32))


def torch_greedy(model_dir: Path, adapter: Path | None = None, n: int = 12) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, ids.shape[1] :].tolist()


def mlx_greedy(model_dir: Path, adapter: Path | None = None, n: int = 12) -> list[int]:
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.utils import load

    model, tok = load(str(model_dir), adapter_path=str(adapter) if adapter else None)
    tokens = []
    for token, _ in generate_step(mx.array(tok.encode(PROMPT)), model, max_tokens=n):
        tokens.append(int(token))
    return tokens
