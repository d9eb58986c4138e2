"""Quantise a model with the engine's own quantisation, and prove the result loads.

mlx: ``mlx_lm.convert`` (affine, 4 or 8 bits, groups of 32/64/128), then the folder is loaded
back with mlx-lm and run on a few tokens. torch: transformers has no quantised format that it
both saves and loads back on a CPU-only machine (bitsandbytes needs CUDA, torch's dynamic int8
is not a saved format), so the torch engine refuses with a pointer to the alternatives.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from forgellm.errors import UserError
from forgellm.models.resolve import MODEL_MARKER, resolve
from forgellm.publishing.staging import refuse_existing, staged_folder
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)


@dataclass
class QuantizeResult:
    out: Path
    quantized_layers: int
    skipped_layers: int
    size_bytes: int
    source_bytes: int


def quantize(
    model: str,
    *,
    bits: int,
    group_size: int = 64,
    engine: str = "mlx",
    out: Path | None = None,
    workspace: Workspace | None = None,
) -> QuantizeResult:
    workspace = workspace or Workspace.current()
    if engine == "torch":
        raise UserError(
            "the torch engine cannot save a quantised model that transformers loads back on this machine "
            "(bitsandbytes needs CUDA; torch dynamic int8 is not a saved format). Use --engine mlx "
            "(quantised for the mlx engine), or `forgellm publish --gguf` for a GGUF that llama.cpp can quantise"
        )
    if engine != "mlx":
        raise UserError(f"--engine {engine!r} is not an engine: use mlx or torch")
    if bits not in BITS:
        raise UserError(f"--bits {bits} is not supported by mlx-lm here: use {' or '.join(map(str, BITS))}")
    if group_size not in GROUP_SIZES:
        raise UserError(f"--group-size {group_size} is not supported: use one of {', '.join(map(str, GROUP_SIZES))}")
    info = resolve(model, workspace)
    if info.is_adapter or not (info.path / "config.json").exists():
        raise UserError(f"{info.name} is an adapter or a run, not a full model: fuse it first (`forgellm fuse`)")
    if "quantization" in info.extra:
        raise UserError(
            f"{info.name} is already quantised ({info.extra['quantization']}); quantise its "
            f"full-precision source instead"
        )
    out = (
        Path(out) if out is not None else workspace.models("published") / f"{info.path.name}-mlx-q{bits}-g{group_size}"
    )
    refuse_existing(out)
    with staged_folder(out) as staging:
        _convert(info.path, staging, bits, group_size)
        quantized, skipped = _check_loads(staging)
        if quantized == 0:
            raise UserError(
                f"no layer of {info.name} has an input size divisible by {group_size}: "
                f"nothing was quantised; choose a smaller --group-size"
            )
        (staging / MODEL_MARKER).write_text(
            json.dumps(
                {
                    "source": str(info.path),
                    "engine": "mlx",
                    "quantization": {"bits": bits, "group_size": group_size, "mode": "affine"},
                },
                indent=2,
            )
            + "\n"
        )
    return QuantizeResult(out, quantized, skipped, _size(out), _size(info.path))


def _convert(source: Path, staging: Path, bits: int, group_size: int) -> None:
    from mlx_lm.convert import convert

    staging.rmdir()  # mlx_lm.convert insists on creating the folder itself
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):  # it reports progress with print()
        convert(str(source), mlx_path=str(staging), quantize=True, q_bits=bits, q_group_size=group_size)
    log.debug("mlx_lm.convert: %s", chatter.getvalue().strip())
    (staging / "README.md").unlink(missing_ok=True)  # a hub card naming mlx-community, not this model


def _check_loads(folder: Path) -> tuple[int, int]:
    """Load the quantised folder with mlx-lm and run it; (quantised, left full-precision) linear layers."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import load

    model, tokenizer = load(str(folder))
    logits = model(mx.array([tokenizer.encode("Hello")]))
    if not bool(mx.all(mx.isfinite(logits)).item()):
        raise UserError("the quantised model produces non-finite logits; try --bits 8 or a smaller --group-size")
    quantized = sum(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())
    plain = sum(isinstance(m, (nn.Linear, nn.Embedding)) for _, m in model.named_modules())
    return quantized, plain


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))
