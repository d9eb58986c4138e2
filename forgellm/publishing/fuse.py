"""Fuse a run's chosen checkpoint into a full model folder that both engines load.

mlx-lm adapters go through mlx-lm's own fuse machinery (``load`` with the adapter, then each
LoRA/DoRA layer's ``fuse()``, then ``save``); PEFT adapters through ``merge_and_unload``;
full fine-tune checkpoints are laid over the base weights. The result is a plain safetensors
folder with the base model's tokenizer and chat template.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from forgellm.errors import UserError
from forgellm.jsonio import read_json
from forgellm.models.resolve import ModelInfo, describe, resolve
from forgellm.publishing.staging import refuse_existing, staged_folder
from forgellm.runs.checkpoints import choose_checkpoint
from forgellm.runs.layout import FINAL_DIR, find_run, read_config
from forgellm.runs.lock import refuse_if_held
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


@dataclass
class FuseResult:
    out: Path
    checkpoint: Path
    base: ModelInfo
    method: str  # mlx-lm fuse | peft merge_and_unload | full weights


def fuse_run(
    run: str | Path,
    checkpoint: str = "best",
    out: Path | None = None,
    workspace: Workspace | None = None,
    *,
    dequantize: bool = False,
) -> FuseResult:
    """Fuse checkpoint ``checkpoint`` (best | latest | final | step) of ``run`` into ``out``
    (default ``<run>/fused-<checkpoint>``); refuses an existing ``out``."""
    run_dir = find_run(run, workspace)
    ckpt = choose_checkpoint(run_dir, checkpoint)
    if ckpt.name == FINAL_DIR:  # the trainer replaces final/ at its end
        refuse_if_held(run_dir, "fuse the final weights of")
    out = Path(out) if out is not None else run_dir / f"fused-{ckpt.name}"
    refuse_existing(out)
    base = base_model_of(run_dir, ckpt, workspace)
    with staged_folder(out) as staging:
        method = fuse_into(ckpt, base, staging, dequantize=dequantize)
    log.info("fused %s onto %s with %s into %s", ckpt, base.path, method, out)
    return FuseResult(out=out, checkpoint=ckpt, base=base, method=method)


def base_model_of(run_dir: Path, checkpoint: Path, workspace: Workspace | None = None) -> ModelInfo:
    """The base model a run trained on: ``model_name`` of its config.yaml, else the adapter's own record."""
    name = read_config(run_dir).get("model_name")
    if not name:
        adapter_cfg = read_json(checkpoint / "adapter_config.json") or {}
        name = adapter_cfg.get("base_model_name_or_path") or adapter_cfg.get("model")
    if not name:
        raise UserError(
            f"cannot tell which base model run {run_dir.name} trained on: its config.yaml has no "
            f"model_name and the checkpoint does not name one"
        )
    info = resolve(str(name), workspace)
    if info.is_adapter or not (info.path / "config.json").exists():
        raise UserError(
            f"run {run_dir.name} trained on {name!r}, which is itself an adapter or a run: "
            f"fuse that one first and train on the fused model"
        )
    return info


def fuse_into(checkpoint: Path, base: ModelInfo, dest: Path, *, dequantize: bool = False) -> str:
    """Write the fused model of ``checkpoint`` over ``base`` into the empty folder ``dest``; with
    ``dequantize`` a quantized (QLoRA) base comes out in full precision."""
    from safetensors import SafetensorError

    info = describe(checkpoint)
    try:
        if info.is_adapter and info.adapter_format == "mlx":
            _fuse_mlx(checkpoint, base.path, dest, dequantize=dequantize)
            method = "mlx-lm fuse"
        elif info.is_adapter:
            _fuse_peft(checkpoint, base.path, dest)
            method = "peft merge_and_unload"
        elif any(checkpoint.glob("*.safetensors")):
            _overlay_full_weights(checkpoint, base.path, dest)
            method = "full weights"
        else:
            raise UserError(f"{checkpoint} holds neither an adapter (adapter_config.json) nor safetensors weights")
    except SafetensorError as exc:  # a truncated or overwritten weights file
        raise UserError(
            f"{checkpoint}: a .safetensors file is damaged ({exc}); choose another checkpoint with --checkpoint"
        ) from None
    finish_model_folder(dest, base.path)
    return method


def _fuse_mlx(adapter: Path, base: Path, dest: Path, *, dequantize: bool = False) -> None:
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load, save

    model, tokenizer, config = load(str(base), adapter_path=str(adapter), return_config=True)
    fused = [
        (name, module.fuse(dequantize=dequantize)) for name, module in model.named_modules() if hasattr(module, "fuse")
    ]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize:  # the layers without adapters too, and a config that no longer says quantized
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    save(dest, base, model, tokenizer, config, donate_model=False)
    (dest / "README.md").unlink(missing_ok=True)  # mlx-lm's hub card; publish writes a real one


def _fuse_peft(adapter: Path, base: Path, dest: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(dest)


def _overlay_full_weights(checkpoint: Path, base: Path, dest: Path) -> None:
    """A full fine-tune checkpoint: its tensors replace the base model's (it may hold only the trained layers)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    state = model.state_dict()
    for file in sorted(checkpoint.glob("*.safetensors")):
        tensors = load_file(file)
        unknown = [k for k in tensors if k not in state]
        if unknown:
            raise UserError(
                f"{file} holds tensors the base model does not have (e.g. {unknown[0]}): "
                f"it is not a full fine-tune of {base.name}"
            )
        for key, value in tensors.items():
            state[key].copy_(value.to(state[key].dtype))
    model.save_pretrained(dest)


def finish_model_folder(dest: Path, base: Path) -> None:
    """Copy the tokenizer and chat template from the base and make config.json readable by mlx-lm too."""
    for name in TOKENIZER_FILES:
        if (base / name).exists() and not (dest / name).exists():
            shutil.copy2(base / name, dest / name)
    config_path = dest / "config.json"
    config = json.loads(config_path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]  # transformers 5 nests it; mlx-lm reads the top level
        config_path.write_text(json.dumps(config, indent=2) + "\n")
