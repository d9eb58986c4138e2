"""Portable LoRA adapters: PEFT (torch engine) <-> mlx-lm (mlx engine).

Both compute ``y = W x + scale * B A x``; only the layout differs:

    PEFT    base_model.model.<module>.lora_A.weight  (r, in)    lora_B.weight (out, r)   scale = alpha / r
                                                                                     (alpha / sqrt(r) with rsLoRA)
    mlx-lm  <module>.lora_a                          (in, r)    <module>.lora_b (r, out)  scale stored as is

so conversion transposes each matrix, renames it and carries the scale. Module paths are the
Hugging Face ones, which mlx-lm keeps for llama-family models. DoRA, per-module ranks, LoRA on
embeddings or mixture-of-experts layers have no faithful counterpart and are refused.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from forgellm.errors import UserError
from forgellm.jsonio import read_json
from forgellm.models.resolve import ModelInfo, resolve
from forgellm.publishing.staging import staged_folder
from forgellm.workspace import Workspace

PEFT_WEIGHTS = "adapter_model.safetensors"
MLX_WEIGHTS = "adapters.safetensors"
PEFT_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")
MLX_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[ab])$")
LAYER = re.compile(r"^(?:.+\.)?layers\.(?P<index>\d+)\.(?P<key>.+)$")


def convert_adapter(
    src: ModelInfo, to: str, out: Path, *, base: str | None = None, workspace: Workspace | None = None
) -> Path:
    """Write ``src`` (an adapter) in format ``to`` (mlx | peft) into the new folder ``out``."""
    if not src.is_adapter:
        raise UserError(f"{src.path} is not an adapter (no adapter_config.json): nothing to convert")
    if to not in ("mlx", "peft"):
        raise UserError(f"--to {to!r} is not a format: use mlx or peft")
    if src.adapter_format == to:
        raise UserError(f"{src.path} is already a {to} adapter")
    base_name = base or src.base_model
    with staged_folder(out) as staging:
        if to == "mlx":
            peft_to_mlx(src.path, staging, base_name, workspace)
        else:
            mlx_to_peft(src.path, staging, base_name)
    return out


def peft_to_mlx(src: Path, dest: Path, base: str | None = None, workspace: Workspace | None = None) -> None:
    config = read_json(src / "adapter_config.json") or {}
    _refuse_unportable_peft(config)
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    pairs = _pairs(_load(src / PEFT_WEIGHTS), PEFT_KEY)
    weights, layers, keys = {}, set(), set()
    for module, (a, b) in pairs.items():
        layer = LAYER.match(module)
        if layer is None:
            raise UserError(
                f"the adapter trains {module}, outside the transformer blocks: mlx-lm adapters "
                f"cover only block layers; fuse it with `forgellm fuse` instead"
            )
        layers.add(int(layer.group("index")))
        keys.add(layer.group("key"))
        weights[f"{module}.lora_a"] = a.T.contiguous()  # (r, in) -> (in, r)
        weights[f"{module}.lora_b"] = b.T.contiguous()  # (out, r) -> (r, out)
    total = _num_layers(base, workspace)
    _save(weights, dest / MLX_WEIGHTS)
    mlx_config = {
        "fine_tune_type": "lora",
        # mlx-lm wraps the top num_layers blocks; -1 wraps all (blocks without weights here keep B = 0).
        "num_layers": total - min(layers) if total else -1,
        "lora_parameters": {
            "rank": rank,
            "scale": scale,
            "dropout": float(config.get("lora_dropout") or 0.0),
            "keys": sorted(keys),
        },
        "model": base,
        "converted_from": "peft",
    }
    (dest / "adapter_config.json").write_text(json.dumps(mlx_config, indent=2) + "\n")


def mlx_to_peft(src: Path, dest: Path, base: str | None = None) -> None:
    from peft import LoraConfig

    config = read_json(src / "adapter_config.json") or {}
    kind = config.get("fine_tune_type", "lora")
    if kind != "lora":
        raise UserError(f"{src} is a {kind} adapter: only LoRA converts to PEFT; use `forgellm fuse` for {kind}")
    params = config.get("lora_parameters") or {}
    rank, scale = int(params["rank"]), float(params["scale"])
    pairs = _pairs(_load(src / MLX_WEIGHTS), MLX_KEY)
    weights = {}
    for module, (a, b) in pairs.items():
        if a.ndim != 2 or "embed" in module:
            raise UserError(
                f"the adapter trains {module} (an embedding or expert layer), which PEFT LoRA "
                f"cannot hold the same way; fuse it with `forgellm fuse` instead"
            )
        weights[f"base_model.model.{module}.lora_A.weight"] = a.T.contiguous()  # (in, r) -> (r, in)
        weights[f"base_model.model.{module}.lora_B.weight"] = b.T.contiguous()  # (r, out) -> (out, r)
    peft_config = LoraConfig(
        r=rank,
        lora_alpha=scale * rank,
        lora_dropout=float(params.get("dropout") or 0.0),
        target_modules=sorted(pairs),
        task_type="CAUSAL_LM",
        base_model_name_or_path=base,
    )
    peft_config.save_pretrained(str(dest))
    _save(weights, dest / PEFT_WEIGHTS)


def _refuse_unportable_peft(config: dict[str, Any]) -> None:
    if config.get("peft_type") != "LORA":
        raise UserError(f"only LoRA adapters convert; this one is {config.get('peft_type')}")
    problems = [
        ("use_dora", "DoRA"),
        ("rank_pattern", "per-module ranks (rank_pattern)"),
        ("alpha_pattern", "per-module alphas (alpha_pattern)"),
        ("modules_to_save", "fully trained modules (modules_to_save)"),
    ]
    for key, what in problems:
        if config.get(key):
            raise UserError(
                f"the adapter uses {what}, which mlx-lm LoRA adapters cannot express; "
                f"fuse it with `forgellm fuse` and use the fused model instead"
            )
    if config.get("bias", "none") != "none":
        raise UserError("the adapter trains biases (bias != 'none'), which mlx-lm LoRA adapters cannot express")


def _pairs(tensors: dict[str, Any], pattern: re.Pattern[str]) -> dict[str, tuple[Any, Any]]:
    """module -> (A, B) in the source layout; every tensor must be one half of a pair."""
    halves: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        match = pattern.match(key)
        if match is None:
            raise UserError(f"unexpected tensor {key!r} in the adapter: only LoRA A/B matrices convert")
        halves.setdefault(match.group("module"), {})[match.group("which").lower()] = value
    incomplete = [m for m, h in halves.items() if set(h) != {"a", "b"}]
    if incomplete or not halves:
        raise UserError(f"the adapter has no complete LoRA pair for {incomplete[0] if incomplete else 'any module'}")
    return {m: (h["a"], h["b"]) for m, h in sorted(halves.items())}


def _num_layers(base: str | None, workspace: Workspace | None) -> int | None:
    if not base:
        return None
    try:
        info = resolve(base, workspace)
    except UserError:
        return None
    layers = (read_json(info.path / "config.json") or {}).get("num_hidden_layers")
    return int(layers) if isinstance(layers, int) else None


def _load(path: Path) -> dict[str, Any]:
    """Tensors as torch tensors, whatever their dtype (numpy has no bfloat16)."""
    from safetensors.torch import load_file

    if not path.exists():
        raise UserError(f"{path} is missing: the adapter folder is incomplete")
    return load_file(str(path))


def _save(weights: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(weights, str(path), metadata={"format": "pt" if path.name == PEFT_WEIGHTS else "mlx"})


def default_output(src: ModelInfo, to: str) -> Path:
    return src.path.parent / f"{src.path.name}-{to}"
