"""The torch side of training: transformers + PEFT (LoRA, DoRA) or full fine-tuning, AdamW."""

from __future__ import annotations

import io
import logging
import math
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from forgellm.errors import UserError
from forgellm.training.engine_api import process_peak_rss_bytes, top_layers
from forgellm.training.preference import PreferenceSettings
from forgellm.training.torch_lora import fuse_lora_layers
from forgellm.training.torch_loss import linear_cross_entropy_sum
from forgellm.training.torch_preference import pair_losses

if TYPE_CHECKING:
    from forgellm.data.sequences import PairBatch
    from forgellm.models.resolve import ModelInfo
    from forgellm.training.config import TrainingConfig

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)
OPTIMIZER_FILE = "optimizer.pt"
# Architectures whose logits are exactly the output layer's product with the decoder's last hidden
# states (no soft-capping or scaling after it): their loss is fused with that product.
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "smollm3", "olmo2"})


def _qlora_kwargs(config: TrainingConfig) -> dict:
    """``quantization: 4bit|8bit``: bitsandbytes (CUDA only; `check_quantization` refused it otherwise)."""
    if config.quantization == "none":
        return {}
    from transformers import BitsAndBytesConfig

    if config.quantization == "4bit":
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": quant, "device_map": {"": 0}}


def precision(device: torch.device, *, full: bool) -> tuple[torch.dtype, torch.dtype | None]:
    """(the dtype the weights load in, the dtype the forward pass computes in under autocast or None).

    CPU: float32 throughout (no fast half-precision matmul there). GPU: bfloat16 compute. LoRA/DoRA
    keep the frozen base in bfloat16 (PEFT keeps the adapters in float32); full fine-tuning keeps
    float32 weights under bfloat16 autocast, so AdamW's small updates are not rounded away and the
    weights it does not train are saved exactly as they were loaded."""
    if device.type == "cpu":
        return torch.float32, None
    return (torch.float32, torch.bfloat16) if full else (torch.bfloat16, None)


class TorchTrainable:
    engine = "torch"
    fuses_loss = True  # the sharded trainable sets False: FSDP unshards the output layer only inside forward()

    def __init__(self, config: TrainingConfig, base: ModelInfo, adapter: ModelInfo | None = None):
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one bar per checkpoint save would drown the run's own
        # PEFT still calls transformers' old gradient-checkpointing names; not the user's concern.
        warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)
        self.config = config
        self.base = base
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":  # the peak this run reports is its own, not an earlier run's in this process
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(config.seed)
        dtype, self.compute_dtype = precision(self.device, full=adapter is None and config.fine_tune_type == "full")
        model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=dtype, **_qlora_kwargs(config))
        model.config.use_cache = False
        if config.quantization != "none":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.grad_checkpointing)
        self.num_layers = int(model.config.num_hidden_layers)
        layers = top_layers(config, self.num_layers)
        self.is_peft = adapter is not None or config.fine_tune_type in ("lora", "dora")
        self.preference = PreferenceSettings.of(config)
        # DPO's reference: a new adapter switched off is the model as training starts (no second copy);
        # otherwise the reference is computed before training and comes with each batch.
        self.reference_from_adapter_off = self.is_peft and adapter is None
        if adapter is not None:
            model = self._continue_adapter(model, adapter)
        elif self.is_peft:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=list(config.lora_target_modules),
                use_dora=config.fine_tune_type == "dora",
                layers_to_transform=None if config.num_layers == -1 else layers,
                task_type="CAUSAL_LM",
            )
            try:
                model = get_peft_model(model, lora)
            except ValueError as exc:
                raise UserError(f"lora_target_modules={config.lora_target_modules}: {exc}") from None
        else:
            model.requires_grad_(False)
            blocks = model.model.layers
            for i in layers:
                blocks[i].requires_grad_(True)
            if config.num_layers == -1:
                model.requires_grad_(True)
        if config.grad_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # bitsandbytes placed the quantized model on the GPU already (and refuses .to()).
        self.model = model if config.quantization != "none" else model.to(self.device)
        self.model.train()
        if self.is_peft:
            fuse_lora_layers(self.model)
        self.output_head = self._plain_output_head()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.trainable_params = sum(p.numel() for p in self.params)
        self.total_params = sum(p.numel() for p in self.model.parameters())
        # fused: one kernel for all tensors instead of a dozen per tensor; the step of a full fine-tune
        # of the embedded model went from 30.7 s to 5.6 s on the loaded 2-core CPU (BENCHMARKS.md).
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=config.learning_rate,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=config.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),
        )
        self._train_forward = None  # the network, or its compiled form (`compile: true`), built at the first step

    def _plain_output_head(self) -> torch.nn.Linear | None:
        """The output layer when the loss can be fused with it (`forgellm.training.torch_loss`), else None.

        Not under autocast (a GPU's full fine-tune): there the output product runs in bfloat16 from
        float32 weights, which the plain path leaves to autocast."""
        causal = self._causal_lm
        head = causal.get_output_embeddings()
        if (
            not self.fuses_loss
            or self.compute_dtype is not None
            or type(head) is not torch.nn.Linear
            or head.bias is not None
            or causal.config.model_type not in PLAIN_HEAD_MODEL_TYPES
        ):
            return None
        return head

    @property
    def _causal_lm(self) -> torch.nn.Module:
        """The transformers model (under PEFT's wrapper, with the adapters in its layers)."""
        return self.model.get_base_model() if self.is_peft else self.model

    @property
    def _network(self) -> torch.nn.Module:
        """What the forward pass runs: the decoder alone when the loss is fused with the output
        layer, the whole model (to its logits) otherwise."""
        if self.output_head is None:
            return self.model
        return self._causal_lm.get_decoder()

    def _continue_adapter(self, model, adapter: ModelInfo):
        from peft import PeftModel

        if adapter.adapter_format != "peft":
            raise UserError(
                f"{adapter.name} is an {adapter.adapter_format} adapter; continue it with engine: "
                f"{adapter.adapter_format}, or start from a fused model"
            )
        log.info("continuing adapter %s", adapter.path)
        return PeftModel.from_pretrained(model, str(adapter.path), is_trainable=True)

    # --- the loss, identical in both engines -------------------------------------------------
    def _loss_sum(self, tokens: np.ndarray, mask: np.ndarray, network=None) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(self.device)
        targets = x[:, 1:].reshape(-1)
        weights = torch.from_numpy(np.asarray(mask[:, 1:], dtype=np.float32)).to(self.device).reshape(-1)
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype is not None):
            out = (self._network if network is None else network)(input_ids=x[:, :-1])
        if self.output_head is not None:
            hidden = out.last_hidden_state
            loss_sum = linear_cross_entropy_sum(
                hidden.reshape(-1, hidden.shape[-1]), self.output_head.weight, targets, weights
            )
        else:
            logits = out.logits  # (B, L-1, V)
            loss_sum = (
                F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="none") * weights
            ).sum()
        return loss_sum, int(weights.sum().item())

    def forward_backward(self, tokens: np.ndarray, mask: np.ndarray, loss_scale: float) -> tuple[float, int]:
        if self._train_forward is None:
            self._train_forward = self._compiled() if self.config.compile else self._network
        loss_sum, n = self._loss_sum(tokens, mask, self._train_forward)
        (loss_sum * loss_scale).backward()
        return float(loss_sum.item()), n

    # --- preference pairs (`forgellm.training.preference`) -----------------------------------
    def _sequence_logps(self, tokens: np.ndarray, mask: np.ndarray, network=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed log-probability of each sequence's target tokens, their count), both (n,)."""
        used = int(np.flatnonzero(mask.any(axis=0)).max(initial=1)) + 1  # right padding: cut it off
        x = torch.from_numpy(np.asarray(tokens[:, :used], dtype=np.int64)).to(self.device)
        weights = torch.from_numpy(np.asarray(mask[:, 1:used], dtype=np.float32)).to(self.device)
        targets = x[:, 1:]
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype is not None):
            out = (self._network if network is None else network)(input_ids=x[:, :-1])
        if self.output_head is not None:  # the fused loss, a sequence at a time: no (n, L, V) logits
            hidden = out.last_hidden_state
            sums = torch.stack(
                [
                    -linear_cross_entropy_sum(hidden[i], self.output_head.weight, targets[i], weights[i])
                    for i in range(len(x))
                ]
            )
        else:
            logits = out.logits.float()
            sums = -(
                F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none").view_as(
                    weights
                )
                * weights
            ).sum(dim=1)
        return sums, weights.sum(dim=1)

    def _pairs(self, batch: PairBatch, network) -> tuple[torch.Tensor, torch.Tensor]:
        n, length = batch.tokens.shape[0], batch.tokens.shape[2]
        tokens, mask = batch.tokens.reshape(2 * n, length), batch.mask.reshape(2 * n, length)
        if self.preference is None:
            raise RuntimeError("preference pairs reached a trainable built without preference settings")
        reference = None
        if self.preference.needs_reference:
            if batch.reference is not None:
                reference = torch.from_numpy(np.asarray(batch.reference, dtype=np.float32)).to(self.device)
            elif self.reference_from_adapter_off:
                with torch.no_grad(), self.model.disable_adapter():
                    reference = self._sequence_logps(tokens, mask, network)[0].view(n, 2)
            else:
                raise RuntimeError("dpo needs the reference log-probabilities of this batch")
        logps, counts = self._sequence_logps(tokens, mask, network)
        return pair_losses(self.preference, logps.view(n, 2), counts.view(n, 2), reference)

    def pair_backward(self, batch: PairBatch, loss_scale: float) -> np.ndarray:
        """Add ``loss_scale * d(sum of the pairs' losses)/d(params)``; return the sums of `METRICS`."""
        if self._train_forward is None:
            self._train_forward = self._compiled() if self.config.compile else self._network
        losses, metrics = self._pairs(batch, self._train_forward)
        loss_sum = losses.sum()
        (loss_sum * loss_scale).backward()
        return np.concatenate([[loss_sum.item()], metrics.sum(dim=0).cpu().numpy()]).astype(np.float64)

    @torch.no_grad()
    def pair_eval(self, batch: PairBatch) -> np.ndarray:
        self.model.eval()
        try:
            losses, metrics = self._pairs(batch, None)
        finally:
            self.model.train()
        return np.concatenate([[losses.sum().item()], metrics.sum(dim=0).cpu().numpy()]).astype(np.float64)

    @torch.no_grad()
    def sequence_logps(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Summed target log-probability of each sequence (n,), in evaluation mode: the stored reference."""
        self.model.eval()
        try:
            return self._sequence_logps(tokens, mask)[0].cpu().numpy()
        finally:
            self.model.train()

    def _compiled(self):
        """The model's forward (and so its backward) compiled by torch.compile (inductor): elementwise
        work fused around the matrix products, the same losses. On the embedded model, LoRA, batch
        4 x 128 on 2 CPU cores: a step 3.40 -> 3.20 s (medians of 10 interleaved rounds), after 3-6
        min of compiling (1.5 min with inductor's cache warm). Only training steps use it;
        evaluation and saving use the model itself."""
        log.info("compiling the model (torch.compile); the first step waits for it")
        return torch.compile(self._network)

    def reseed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def sum_gradients(self, group) -> None:
        group.sum_gradients(self.params)

    def optimizer_step(self, lr: float, max_grad_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_grad_norm if max_grad_norm > 0 else math.inf)
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a sharded DTensor
        if math.isfinite(norm):
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    @torch.no_grad()
    def eval_loss(self, tokens: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
        self.model.eval()
        try:
            loss_sum, n = self._loss_sum(tokens, mask)
        finally:
            self.model.train()
        return float(loss_sum.item()), n

    def generate_greedy(self, prompts: list[list[int]], max_tokens: int, stop_ids: set[int]) -> list[list[int]]:
        from forgellm.engines.batched import torch_batch

        self.model.eval()
        try:
            return torch_batch(self.model, prompts, max_tokens, stop_ids)
        finally:
            self.model.train()

    # --- saving ------------------------------------------------------------------------------
    def _save_weights(self, folder: Path, state_dict: dict | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        # PEFT: adapter_config.json + adapter_model.safetensors; state_dict: weights gathered from shards (FSDP)
        self.model.save_pretrained(str(folder), state_dict=state_dict)
        if not self.is_peft:
            for name in TOKENIZER_FILES:
                if (self.base.path / name).exists():
                    shutil.copy(self.base.path / name, folder / name)

    def save_checkpoint(self, folder: Path) -> None:
        self._save_weights(folder)
        # Serialised in memory, then written by Python: a full disk then raises a plain OSError
        # (torch's own file writer turns it into an opaque RuntimeError).
        buffer = io.BytesIO()
        torch.save(self.optimizer.state_dict(), buffer)
        (folder / OPTIMIZER_FILE).write_bytes(buffer.getbuffer())

    def load_checkpoint(self, folder: Path) -> None:
        from safetensors.torch import load_file

        if self.is_peft:
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.model, load_file(str(folder / "adapter_model.safetensors")))
            missing = [k for k in getattr(result, "unexpected_keys", [])]
            if missing:
                raise UserError(f"checkpoint {folder} does not match this adapter: unexpected {missing[:3]}")
        else:
            state: dict[str, torch.Tensor] = {}
            for file in sorted(folder.glob("*.safetensors")):
                state.update(load_file(str(file)))
            self.model.load_state_dict(state, strict=False)
        self.optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True))

    def save_final(self, folder: Path) -> None:
        self._save_weights(folder)

    def peak_memory_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated())
        return process_peak_rss_bytes()
