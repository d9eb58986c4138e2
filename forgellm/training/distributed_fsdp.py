"""Sharded data parallel for full fine-tuning under torch (``fsdp: true``; FSDP2, ``fully_shard``).

Every decoder block and the model itself are sharded across the workers: between steps each
worker holds 1/N of the weights, gradients and AdamW state, and a block's full weights exist
only during its forward and backward. Memory for a full fine-tune drops to about 1/N per
worker plus one block, so a model that does not fit one worker fits N of them.

Gradients are reduce-scattered during the backward pass and averaged over the N workers;
the loss (a preference step's too) is scaled by N, so the result is the same sum the plain
data-parallel path gets from its all-reduce and the loop does not change. A full fine-tune's
DPO reference needs no second model: it is computed with these sharded weights before the first
step, every rank taking part (`forgellm.training.preference.reference_logps`).
Checkpoints gather the full weights and optimizer state to rank 0 (every rank takes part,
see ``collective_save``) and hold full weights in the usual layout, so an FSDP checkpoint
resumes with any number of FSDP workers, and its weights load anywhere.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from forgellm.errors import UserError
from forgellm.training.torch_trainable import OPTIMIZER_FILE, TorchTrainable

if TYPE_CHECKING:
    from forgellm.models.resolve import ModelInfo
    from forgellm.training.config import TrainingConfig


class FsdpTrainable(TorchTrainable):
    collective_save = True  # every rank calls save_checkpoint/save_final (rank 0 with a folder, the others None)
    # Every forward all-gathers the weights: the ranks must run the same number of forwards, also
    # where they split work of uneven size (evaluation, the stored DPO reference).
    collective_forward = True
    fuses_loss = False  # the output layer's weight is whole only inside the root module's forward()

    def __init__(self, config: TrainingConfig, base: ModelInfo, adapter: ModelInfo | None = None):
        from torch.distributed.fsdp import fully_shard

        if config.fine_tune_type != "full" or adapter is not None:
            raise UserError(
                "fsdp: true shards a full fine-tune; set fine_tune_type: full (LoRA/DoRA adapters are "
                "small: train them without fsdp)"
            )
        if not dist.is_initialized():  # one process: a group of one, so a sharded run can resume alone
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        super().__init__(config, base, adapter)
        for block in self.model.model.layers:
            fully_shard(block)
        fully_shard(self.model)
        self.world_size = dist.get_world_size()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # the same optimizer and settings, over the sharded parameters
        kind = type(self.optimizer)
        accepted = inspect.signature(kind).parameters
        self.optimizer = kind(self.params, **{k: v for k, v in self.optimizer.defaults.items() if k in accepted})

    def forward_backward(self, tokens, mask, loss_scale: float) -> tuple[float, int]:
        # FSDP averages the gradients over the workers (gloo has no pre-multiplied sum): scale up to a sum
        return super().forward_backward(tokens, mask, loss_scale * self.world_size)

    def pair_backward(self, batch, loss_scale: float):
        # the same scaling as forward_backward: a sum over the workers, not FSDP's average
        return super().pair_backward(batch, loss_scale * self.world_size)

    def sum_gradients(self, group) -> None:
        """Already done: FSDP reduce-scattered the summed gradients during the backward pass."""

    def _gather(self, with_optimizer: bool) -> tuple[dict, dict | None]:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(self.model, options=options)
        optimizer = get_optimizer_state_dict(self.model, self.optimizer, options=options) if with_optimizer else None
        return weights, optimizer

    def save_checkpoint(self, folder: Path | None) -> None:
        weights, optimizer = self._gather(with_optimizer=True)
        if folder is not None:
            self._save_weights(folder, weights)
            torch.save(optimizer, folder / OPTIMIZER_FILE)

    def save_final(self, folder: Path | None) -> None:
        weights, _ = self._gather(with_optimizer=False)
        if folder is not None:
            self._save_weights(folder, weights)

    def load_checkpoint(self, folder: Path) -> None:
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        weights: dict[str, torch.Tensor] = {}
        for file in sorted(folder.glob("*.safetensors")):
            weights.update(load_file(str(file)))
        set_model_state_dict(self.model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
        saved = torch.load(folder / OPTIMIZER_FILE, weights_only=True)
        if not isinstance(saved.get("state"), dict) or any(isinstance(k, int) for k in saved["state"]):
            raise UserError(f"checkpoint {folder} was not written with fsdp: true; resume it with fsdp: false")
        set_optimizer_state_dict(self.model, self.optimizer, saved, options=StateDictOptions(full_state_dict=True))
