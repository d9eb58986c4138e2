"""What the training loop needs from an engine: a `Trainable` model.

The loop is written once against this Protocol; `torch_trainable` and `mlx_trainable`
implement it. The loss is the same for both: mean cross-entropy over target tokens, where
token ``j`` of a sequence is a target when ``mask[:, j] == 1`` (predicted from tokens < j).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from forgellm.errors import EngineUnavailableError, UserError

if TYPE_CHECKING:
    from forgellm.data.sequences import PairBatch
    from forgellm.models.resolve import ModelInfo
    from forgellm.training.config import TrainingConfig
    from forgellm.training.distributed import Group


class Trainable(Protocol):
    engine: str
    trainable_params: int
    total_params: int
    num_layers: int  # transformer blocks in the model

    def forward_backward(self, tokens: np.ndarray, mask: np.ndarray, loss_scale: float) -> tuple[float, int]:
        """Add ``loss_scale * d(loss_sum)/d(params)`` to the accumulated gradients.

        tokens, mask: (B, L). Returns (sum of target-token cross-entropies, number of target tokens).
        """
        ...

    def reseed(self, seed: int) -> None:
        """Seed the engine's random numbers (dropout) for the coming step. The loop derives the
        seed from (config seed, step), so a resumed run draws the same numbers as an uninterrupted one."""
        ...

    def sum_gradients(self, group: Group) -> None:
        """Replace the accumulated gradients by their sum over the workers of ``group`` (data parallel)."""
        ...

    def optimizer_step(self, lr: float, max_grad_norm: float) -> float:
        """Clip (when max_grad_norm > 0), apply AdamW at ``lr``, zero the gradients; return the
        gradient norm before clipping. A non-finite norm skips the update (weights stay good)."""
        ...

    def eval_loss(self, tokens: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
        """(sum of target-token cross-entropies, target tokens) without gradients."""
        ...

    # Preference pairs (`forgellm.training.preference`); only a trainable built for training_type
    # preference has the settings they need.
    def pair_backward(self, batch: PairBatch, loss_scale: float) -> np.ndarray:
        """Add ``loss_scale * d(sum of the pairs' losses)/d(params)``; return the sums of `METRICS`."""
        ...

    def pair_eval(self, batch: PairBatch) -> np.ndarray:
        """The sums of `METRICS` over the pairs of ``batch``, without gradients."""
        ...

    def sequence_logps(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Summed target log-probability of each sequence (n,), in evaluation mode: DPO's reference."""
        ...

    def generate_greedy(self, prompts: list[list[int]], max_tokens: int, stop_ids: set[int]) -> list[list[int]]:
        """Greedy continuations of the encoded prompts, batched (`forgellm.engines.batched`), with the
        weights as trained so far; per prompt the ids before the first of ``stop_ids``."""
        ...

    def save_checkpoint(self, folder: Path) -> None:
        """Weights/adapter in the engine's native format and the optimizer state."""
        ...

    def load_checkpoint(self, folder: Path) -> None: ...

    def save_final(self, folder: Path) -> None:
        """The trained adapter (or full model) ready to load for inference."""
        ...

    def peak_memory_bytes(self) -> int: ...


def process_peak_rss_bytes() -> int:
    """Peak resident memory of this process (what training costs on a CPU machine)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


QLORA_GROUP_SIZE = 64  # mlx: weights per scale when `quantization` quantizes the base in memory


def check_quantization(config: TrainingConfig, base: ModelInfo) -> None:
    """Before the run folder exists: can this engine train adapters on this (quantized) base?"""
    engine = config.resolved_engine()
    if engine == "torch" and "quantization" in base.extra:
        raise UserError(
            f"{base.name} is quantized for mlx ({base.extra['quantization']}); train it with "
            f"engine: mlx, or use its full-precision source with the torch engine"
        )
    if config.quantization == "none" or engine != "torch":
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise UserError(
            f"quantization: {config.quantization} on the torch engine needs bitsandbytes on a CUDA GPU, "
            f"and torch sees none here. On this machine use the mlx engine: engine: mlx with "
            f"quantization: {config.quantization} (or `forgellm quantize MODEL --bits "
            f"{config.quantization[0]}` and train on the result)"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            f"quantization: {config.quantization} on the torch engine needs the bitsandbytes package: "
            f"pip install bitsandbytes"
        )


def create_trainable(config: TrainingConfig, base: ModelInfo, adapter: ModelInfo | None = None) -> Trainable:
    """The trainable of ``config.resolved_engine()``: ``base`` model, optionally with an adapter to keep training."""
    engine = config.resolved_engine()
    if engine == "torch" and config.fsdp:
        from forgellm.training.distributed_fsdp import FsdpTrainable

        return FsdpTrainable(config, base, adapter)
    if engine == "torch":
        from forgellm.training.torch_trainable import TorchTrainable

        return TorchTrainable(config, base, adapter)
    if engine == "mlx":
        from forgellm.engines import blas

        blas.activate()  # before mlx is imported: its bundled reference BLAS is ~50x slower
        try:
            from forgellm.training.mlx_trainable import MlxTrainable
        except ImportError as exc:
            raise EngineUnavailableError(f"the mlx engine is not installed ({exc}); use engine: torch") from None
        return MlxTrainable(config, base, adapter)
    raise UserError(f"unknown engine {engine!r}; expected torch or mlx")


def top_layers(config: TrainingConfig, total: int) -> list[int]:
    """Indices of the blocks to train: the top ``num_layers`` (all for -1)."""
    if config.num_layers > total:
        raise UserError(
            f"num_layers={config.num_layers} asks to train {config.num_layers} layers, "
            f"the model has {total}; use -1 (all) or a number up to {total}"
        )
    count = total if config.num_layers == -1 else config.num_layers
    return list(range(total - count, total))
