"""Fusing a LoRA adapter into the embedded model (the target is under 10 s).

A rank-8 LoRA adapter on every linear layer of the embedded SmolLM2-135M (random B, so the
merge changes the weights) is fused the way ``forgellm fuse`` does it, into a new folder
with the tokenizer: as a PEFT adapter (torch engine) and, converted, as an mlx-lm adapter
(mlx engine). Baseline, measured in the same run: the libraries called directly with no
ForgeLLM code around them (PEFT ``merge_and_unload`` + ``save_pretrained``; mlx-lm
``load`` + each layer's ``fuse()`` + ``save``). Median of several fuses, in this process.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run(quick: bool) -> list[dict[str, Any]]:
    from forgellm.models.resolve import resolve
    from forgellm.publishing.adapters import convert_adapter
    from forgellm.publishing.fuse import fuse_into

    repeats = 1 if quick else 3
    base = resolve("default")
    with tempfile.TemporaryDirectory(prefix="forgellm-bench-fuse-") as tmp:
        root = Path(tmp)
        peft = _peft_adapter(base.path, root / "peft")
        mlx = convert_adapter(resolve(str(peft)), "mlx", root / "mlx", base=str(base.path))
        setting = f"{base.name}, LoRA rank 8 on {len(TARGETS)} projections of every layer; median of {repeats}"
        return [
            _result(
                "fuse_embedded_peft",
                _median(lambda out: fuse_into(peft, base, out), root, repeats),
                _median(lambda out: _plain_peft(peft, base.path, out), root, repeats),
                f"forgellm fuse (PEFT merge_and_unload, tokenizer, config); {setting}; "
                f"baseline: PEFT merge_and_unload + save_pretrained alone",
            ),
            _result(
                "fuse_embedded_mlx",
                _median(lambda out: fuse_into(mlx, base, out), root, repeats),
                _median(lambda out: _plain_mlx(mlx, base.path, out), root, repeats),
                f"forgellm fuse (mlx-lm fuse); {setting}; baseline: mlx-lm load + fuse() + save alone",
            ),
        ]


def _result(name: str, seconds: float, baseline: float, notes: str) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(seconds, 3),
        "unit": "s",
        "baseline": round(baseline, 3),
        "ratio": round(seconds / baseline, 3) if baseline else None,
        "notes": notes,
    }


def _median(fuse: Callable[[Path], object], root: Path, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):  # the first fuse warms imports and the page cache
        out = root / f"out-{i}"
        out.mkdir()
        start = time.perf_counter()
        fuse(out)
        if i:
            times.append(time.perf_counter() - start)
        shutil.rmtree(out)
    return statistics.median(times)


def _peft_adapter(base: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    model.save_pretrained(out)
    return out


def _plain_peft(adapter: Path, base: Path, out: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="auto"), adapter)
    merged.merge_and_unload().save_pretrained(out)


def _plain_mlx(adapter: Path, base: Path, out: Path) -> None:
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import load, save

    model, tokenizer, config = load(str(base), adapter_path=str(adapter), return_config=True)
    fused = [(name, module.fuse()) for name, module in model.named_modules() if hasattr(module, "fuse")]
    model.update_modules(tree_unflatten(fused))
    save(out, base, model, tokenizer, config, donate_model=False)
