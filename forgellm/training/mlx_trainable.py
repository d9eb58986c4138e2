"""The mlx side of training, built from mlx-lm's own tuner: LoRA/DoRA layers from
``linear_to_lora_layers``, ``nn.value_and_grad``, ``mlx.optimizers.AdamW``; adapters saved
in mlx-lm's format (``adapters.safetensors`` + ``adapter_config.json``) so
``mlx_lm.load(model, adapter_path=...)`` loads them."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_reduce, tree_unflatten
from mlx_lm.tuner.trainer import grad_checkpoint
from mlx_lm.tuner.utils import linear_to_lora_layers, load_adapters
from mlx_lm.utils import load_model

from forgellm.errors import UserError
from forgellm.training.engine_api import process_peak_rss_bytes, top_layers
from forgellm.training.preference import PreferenceSettings

if TYPE_CHECKING:
    from forgellm.data.sequences import PairBatch
    from forgellm.models.resolve import ModelInfo
    from forgellm.training.config import TrainingConfig

ADAPTER_FILE = "adapters.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"


class MlxTrainable:
    engine = "mlx"
    # DPO's reference is computed before training from the starting model and stored (mlx-lm's LoRA
    # layers have no switch to turn the adapter off).
    reference_from_adapter_off = False

    def __init__(self, config: TrainingConfig, base: ModelInfo, adapter: ModelInfo | None = None):
        mx.random.seed(config.seed)
        model, _ = load_model(Path(base.path))
        model.freeze()
        self.base = base
        self.num_layers = len(model.layers)
        if adapter is not None:
            self.adapter_config = self._continue_adapter(model, adapter)
        else:
            layers = top_layers(config, self.num_layers)
            self.adapter_config = {
                "fine_tune_type": config.fine_tune_type,
                "num_layers": len(layers),
                "model": str(base.path),
            }
            if config.fine_tune_type == "full":
                for layer in model.layers[layers[0] :]:
                    layer.unfreeze()
                if config.num_layers == -1:
                    model.unfreeze()
            else:
                if config.quantization != "none":
                    self.adapter_config["base_quantization"] = _quantize_base(model, int(config.quantization[0]))
                lora = {
                    "rank": config.lora_rank,
                    "scale": config.lora_scale,
                    "dropout": config.lora_dropout,
                    "keys": _target_keys(model, config.lora_target_modules),
                }
                linear_to_lora_layers(model, len(layers), lora, use_dora=config.fine_tune_type == "dora")
                self.adapter_config["lora_parameters"] = lora
        if config.grad_checkpointing:
            grad_checkpoint(model.layers[0])
        model.train()
        self.model = model
        self.trainable_params = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        self.total_params = sum(v.size for _, v in tree_flatten(model.parameters()))
        self.optimizer = optim.AdamW(
            learning_rate=config.learning_rate, weight_decay=config.weight_decay, bias_correction=True
        )
        self.optimizer.init(model.trainable_parameters())
        self._loss_and_grad = nn.value_and_grad(model, _loss)
        # Compiled, as mlx_lm.lora compiles its step: the forward and backward's elementwise work is
        # fused (about 25% faster on the CPU, BENCHMARKS.md). The weights and the random state
        # (dropout) are inputs, read at each call, not constants baked into the graph.
        state = [model.state, mx.random.state]
        self._compiled_loss_and_grad = mx.compile(
            lambda x, mask, scale: self._loss_and_grad(self.model, x, mask, scale), inputs=state, outputs=state
        )
        self._grads = None
        self._compile_update()
        self.preference = PreferenceSettings.of(config)
        if self.preference is not None:
            # Not compiled: pairs are cut to their longest response, so shapes change from batch to batch.
            self._pair_loss_and_grad = nn.value_and_grad(model, partial(_pair_loss, settings=self.preference))

    def _compile_update(self) -> None:
        """The clipped AdamW update as one compiled graph over the weights and the optimizer state,
        as mlx_lm.lora compiles its update: each tensor's clip and AdamW arithmetic is fused into one
        pass over memory instead of a dozen (BENCHMARKS.md). Rebuilt when the optimizer's state is
        replaced (a resumed checkpoint), since the graph reads the state objects it was given."""
        state = [self.model.state, self.optimizer.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def update(grads, norm: mx.array, max_norm: mx.array) -> None:
            self.optimizer.update(self.model, _clipped(grads, norm, max_norm))

        self._update = update

    def _continue_adapter(self, model: nn.Module, adapter: ModelInfo) -> dict:
        if adapter.adapter_format != "mlx":
            raise UserError(
                f"{adapter.name} is a {adapter.adapter_format} adapter; continue it with engine: "
                f"{adapter.adapter_format}, or start from a fused model"
            )
        load_adapters(model, str(adapter.path))
        config = json.loads((adapter.path / "adapter_config.json").read_text())
        if config.get("fine_tune_type") == "full":
            for layer in model.layers[-config["num_layers"] :]:
                layer.unfreeze()
        return config

    # --- the loss, identical in both engines -------------------------------------------------
    def forward_backward(self, tokens: np.ndarray, mask: np.ndarray, loss_scale: float) -> tuple[float, int]:
        x, m = mx.array(np.asarray(tokens, dtype=np.int32)), mx.array(np.asarray(mask, dtype=np.float32))
        (_, loss_sum), grads = self._compiled_loss_and_grad(x, m, mx.array(loss_scale, dtype=mx.float32))
        self._grads = grads if self._grads is None else tree_map(mx.add, self._grads, grads)
        mx.eval(loss_sum, self._grads)
        return loss_sum.item(), int(mask[:, 1:].sum())

    def reseed(self, seed: int) -> None:
        mx.random.seed(seed)

    def sum_gradients(self, group) -> None:
        self._grads = group.sum_gradients(self._grads)

    def optimizer_step(self, lr: float, max_grad_norm: float) -> float:
        grads, self._grads = self._grads, None
        norm = _global_norm(grads)
        if math.isfinite(norm):  # a non-finite gradient skips the step: weights and AdamW state stay
            self.optimizer.learning_rate = lr
            self._update(
                grads,
                mx.array(norm, dtype=mx.float32),
                mx.array(max_grad_norm if max_grad_norm > 0 else math.inf, dtype=mx.float32),
            )
            mx.eval(self.model.parameters(), self.optimizer.state)
        return norm

    def eval_loss(self, tokens: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
        self.model.eval()
        try:
            _, loss_sum = _loss(
                self.model,
                mx.array(np.asarray(tokens, dtype=np.int32)),
                mx.array(np.asarray(mask, dtype=np.float32)),
                mx.array(1.0),
            )
            value = cast(float, loss_sum.item())  # a float32 scalar's item; the stubs say int | float | complex
        finally:
            self.model.train()
        return value, int(mask[:, 1:].sum())

    def generate_greedy(self, prompts: list[list[int]], max_tokens: int, stop_ids: set[int]) -> list[list[int]]:
        from forgellm.engines.batched import mlx_batch

        self.model.eval()
        try:
            return mlx_batch(self.model, prompts, max_tokens, stop_ids)
        finally:
            self.model.train()

    # --- preference pairs (`forgellm.training.preference`) -----------------------------------
    def _settings(self) -> PreferenceSettings:
        if self.preference is None:
            raise RuntimeError("preference pairs reached a trainable built without preference settings")
        return self.preference

    def _pair_arrays(self, batch: PairBatch) -> tuple[mx.array, mx.array, mx.array | None]:
        n, length = batch.tokens.shape[0], batch.tokens.shape[2]
        mask = batch.mask.reshape(2 * n, length)
        used = int(np.flatnonzero(mask.any(axis=0)).max(initial=1)) + 1  # right padding: cut it off
        tokens = batch.tokens.reshape(2 * n, length)[:, :used]
        reference = None
        if self._settings().needs_reference:
            if batch.reference is None:
                raise RuntimeError("dpo needs the reference log-probabilities of this batch")
            reference = mx.array(np.asarray(batch.reference, dtype=np.float32))
        return (
            mx.array(np.asarray(tokens, dtype=np.int32)),
            mx.array(np.asarray(mask[:, :used], dtype=np.float32)),
            reference,
        )

    def pair_backward(self, batch: PairBatch, loss_scale: float) -> np.ndarray:
        x, m, reference = self._pair_arrays(batch)
        (_, (loss_sum, metrics)), grads = self._pair_loss_and_grad(
            self.model, x, m, reference, mx.array(loss_scale, dtype=mx.float32)
        )
        self._grads = grads if self._grads is None else tree_map(mx.add, self._grads, grads)
        mx.eval(loss_sum, metrics, self._grads)
        return np.concatenate([[loss_sum.item()], np.array(metrics.sum(axis=0))]).astype(np.float64)

    def pair_eval(self, batch: PairBatch) -> np.ndarray:
        self.model.eval()
        try:
            x, m, reference = self._pair_arrays(batch)
            _, (loss_sum, metrics) = _pair_loss(self.model, x, m, reference, mx.array(1.0), settings=self._settings())
            mx.eval(loss_sum, metrics)
        finally:
            self.model.train()
        return np.concatenate([[loss_sum.item()], np.array(metrics.sum(axis=0))]).astype(np.float64)

    def sequence_logps(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.model.eval()
        try:
            logps, _ = _sequence_logps(
                self.model, mx.array(np.asarray(tokens, dtype=np.int32)), mx.array(np.asarray(mask, dtype=np.float32))
            )
            return np.array(logps)
        finally:
            self.model.train()

    # --- saving ------------------------------------------------------------------------------
    def save_final(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(folder / ADAPTER_FILE), dict(tree_flatten(self.model.trainable_parameters())))
        (folder / "adapter_config.json").write_text(json.dumps(self.adapter_config, indent=2))

    def save_checkpoint(self, folder: Path) -> None:
        self.save_final(folder)
        mx.save_safetensors(str(folder / OPTIMIZER_FILE), dict(tree_flatten(self.optimizer.state)))

    def load_checkpoint(self, folder: Path) -> None:
        self.model.load_weights(str(folder / ADAPTER_FILE), strict=False)
        state = mx.load(str(folder / OPTIMIZER_FILE))
        assert isinstance(state, dict)  # a .safetensors file loads as {name: array}
        self.optimizer.state = tree_unflatten(list(state.items()))
        mx.eval(self.model.parameters(), self.optimizer.state)
        self._compile_update()

    def peak_memory_bytes(self) -> int:
        return process_peak_rss_bytes()


def _quantize_base(model: nn.Module, bits: int) -> dict:
    """QLoRA: the frozen base's linear layers (and embedding) become affine ``bits``-bit in memory,
    before the adapters wrap them; layers whose input size is not a multiple of the group stay."""
    from forgellm.training.engine_api import QLORA_GROUP_SIZE

    nn.quantize(
        model,
        group_size=QLORA_GROUP_SIZE,
        bits=bits,
        class_predicate=lambda _, m: hasattr(m, "to_quantized") and m.weight.shape[-1] % QLORA_GROUP_SIZE == 0,
    )
    # Quantize now: lazily, the float32 weights would live on into the first training step (its
    # memory peak was the float32 model's plus the quantized one's: BENCHMARKS.md, QLoRA).
    mx.eval(model.parameters())
    model.freeze()
    return {"bits": bits, "group_size": QLORA_GROUP_SIZE, "mode": "affine"}


def _loss(model: nn.Module, x: mx.array, mask: mx.array, scale: mx.array) -> tuple[mx.array, mx.array]:
    """(scaled loss to differentiate, sum of target-token cross-entropies). x, mask: (B, L)."""
    logits = model(x[:, :-1]).astype(mx.float32)  # (B, L-1, V)
    loss_sum = (nn.losses.cross_entropy(logits, x[:, 1:]) * mask[:, 1:]).sum()
    return loss_sum * scale, loss_sum


def _sequence_logps(model: nn.Module, x: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
    """(summed target log-probability of each sequence, its target count), both (n,)."""
    logits = model(x[:, :-1]).astype(mx.float32)
    weights = mask[:, 1:]
    return -(nn.losses.cross_entropy(logits, x[:, 1:]) * weights).sum(axis=1), weights.sum(axis=1)


def _log1mexp(x: mx.array) -> mx.array:
    return mx.where(x < -0.6931471805599453, mx.log1p(-mx.exp(x)), mx.log(-mx.expm1(x)))


def _pair_loss(
    model: nn.Module,
    x: mx.array,
    mask: mx.array,
    reference: mx.array | None,
    scale: mx.array,
    *,
    settings: PreferenceSettings,
) -> tuple[mx.array, tuple[mx.array, mx.array]]:
    """(scaled sum of the pairs' losses to differentiate, (that sum, per-pair metrics (n, 6))): the
    formulas of `forgellm.training.torch_preference.pair_losses`. x, mask: (2n, L), pairs interleaved."""
    logps, counts = _sequence_logps(model, x, mask)
    logps, counts = logps.reshape(-1, 2), counts.reshape(-1, 2)
    average = logps / mx.maximum(counts, 1.0)
    if settings.loss == "dpo":
        if reference is None:
            raise RuntimeError("dpo needs the reference log-probabilities of this batch")
        ratios = logps - reference
        z = settings.beta * (ratios[:, 0] - ratios[:, 1])
        eps = settings.label_smoothing
        losses = -(1 - eps) * nn.log_sigmoid(z) - eps * nn.log_sigmoid(-z)
        rewards = settings.beta * ratios
    elif settings.loss == "simpo":
        losses = -nn.log_sigmoid(settings.beta * (average[:, 0] - average[:, 1]) - settings.simpo_gamma)
        rewards = settings.beta * average
    else:  # orpo
        log_odds = (average[:, 0] - average[:, 1]) - (_log1mexp(average[:, 0]) - _log1mexp(average[:, 1]))
        losses = -average[:, 0] - settings.orpo_lambda * nn.log_sigmoid(log_odds)
        rewards = settings.orpo_lambda * average
    rewards, average = mx.stop_gradient(rewards), mx.stop_gradient(average)
    metrics = mx.stack(
        [
            rewards[:, 0],
            rewards[:, 1],
            rewards[:, 0] - rewards[:, 1],
            (rewards[:, 0] > rewards[:, 1]).astype(mx.float32),
            average[:, 0],
            average[:, 1],
        ],
        axis=1,
    )
    loss_sum = losses.sum()
    return loss_sum * scale, (loss_sum, metrics)


def _global_norm(grads) -> float:
    """The L2 norm of all gradients together (evaluated ones). On the CPU, float32 gradients are
    summed by BLAS's dot product on numpy's zero-copy view of their memory: MLX's CPU backend
    reduces on one thread (about 0.2 s for a full fine-tune's 106 M gradients, 2-3% of the step,
    BENCHMARKS.md), sdot in 0.03 s, and each tensor's sum is then added in double precision."""
    leaves = [g for _, g in tree_flatten(grads)]
    if mx.default_device() == mx.cpu:
        viewed = [np.asarray(g).reshape(-1) for g in leaves if g.dtype == mx.float32]
        leaves = [g for g in leaves if g.dtype != mx.float32]
    else:
        viewed = []
    total = math.fsum(float(np.dot(v, v)) for v in viewed)
    if leaves:
        total += cast(float, _square_sum(leaves).item())
    return math.sqrt(total)


@mx.compile
def _square_sum(leaves: list[mx.array]) -> mx.array:
    return tree_reduce(lambda acc, g: acc + g.astype(mx.float32).square().sum(), leaves, mx.array(0.0))


def _clipped(grads, norm: mx.array, max_norm: mx.array):
    """The gradients scaled to a global norm of at most max_norm (as ``mlx.optimizers.clip_grad_norm``)."""
    scale = mx.minimum(max_norm / (norm + 1e-6), 1.0)
    return tree_map(lambda g: (g * scale).astype(g.dtype), grads)


def _target_keys(model: nn.Module, targets: list[str]) -> list[str]:
    """Module names inside a block (e.g. ``self_attn.q_proj``) whose last part is a target."""
    found = {
        name for name, module in model.layers[0].named_modules() if isinstance(module, (nn.Linear, nn.QuantizedLinear))
    }
    keys = sorted(name for name in found if name.split(".")[-1] in targets)
    if not keys:
        names = sorted({n.split(".")[-1] for n in found})
        raise UserError(f"lora_target_modules={targets} matches no linear layer of this model; it has {names}")
    return keys
