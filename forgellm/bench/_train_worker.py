"""One training contender in its own process (see `forgellm.bench.training`).

Contenders: ``forgellm-torch`` and ``forgellm-mlx`` (ForgeLLM's trainables, stepped as the
training loop steps them) and ``peft-loop`` (the plain transformers + PEFT loop a user would
write); ``spec["quantization"]`` (``8bit``/``4bit``) gives ForgeLLM's contenders a quantized base
(`forgellm.bench.qlora`). Commands: ``{"command": "steps", "count": N}`` trains N optimizer steps
and answers seconds, useful (target) tokens and the losses (each step's, and the last);
``{"command": "memory"}`` answers the peak resident memory so far and, on mlx, the allocator's
peak since the set-up; ``{"command": "products", "products": [[m, k, n,
count], ...]}`` times those matrix products alone in the contender's library (the median of a few
runs of each, times its count) and answers their seconds; ``{"command": "profile", "count": N}``
(torch contenders) trains N steps under torch.profiler and answers their seconds and the seconds
their matrix products took inside them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.bench._common import serve

MAX_GRAD_NORM = 1.0
# The aten kernels that run a step's weight products (attention's run inside its own kernel).
MATMUL_OPS = frozenset({"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm"})


@dataclass
class Contender:
    step: Callable[[np.ndarray, np.ndarray], float]  # one optimizer step on (tokens, mask) -> loss
    tokens: np.ndarray
    mask: np.ndarray
    batch_size: int
    engine: str  # the library its matrix products run in: torch or mlx
    position: int = 0

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        rows = (np.arange(self.batch_size) + self.position * self.batch_size) % len(self.tokens)
        self.position += 1
        return self.tokens[rows], self.mask[rows]


def setup(spec: dict[str, Any]) -> Contender:
    data = np.load(spec["data"])
    name = spec["contender"]
    builders = {"forgellm-torch": _forgellm, "forgellm-mlx": _forgellm, "peft-loop": _peft_loop}
    if name not in builders:
        raise ValueError(f"unknown contender {name}")
    contender = Contender(
        builders[name](spec),
        data["tokens"],
        data["mask"],
        spec["batch_size"],
        "mlx" if name == "forgellm-mlx" else "torch",
    )
    if contender.engine == "mlx":
        import mlx.core as mx

        # `memory` reports training's peak, not the load's: quantizing in memory briefly holds the
        # float32 weights beside the quantized ones (the process's peak resident set still counts it).
        mx.reset_peak_memory()
    return contender


def _config(spec: dict[str, Any]):
    from forgellm.training.config import TrainingConfig

    return TrainingConfig(
        model_name=spec["model"],
        engine=spec["contender"].split("-")[1],
        fine_tune_type=spec["fine_tune_type"],
        num_layers=spec["num_layers"],
        lora_rank=spec["lora_rank"],
        lora_alpha=spec["lora_alpha"],
        lora_dropout=0.0,
        batch_size=spec["batch_size"],
        max_seq_length=int(spec["seq_length"]),
        learning_rate=spec["learning_rate"],
        max_grad_norm=MAX_GRAD_NORM,
        seed=0,
        quantization=spec.get("quantization", "none"),
    )


def _forgellm(spec: dict[str, Any]) -> Callable[[np.ndarray, np.ndarray], float]:
    """ForgeLLM's trainable, driven exactly as `forgellm.training.loop.train` drives it, in the
    environment ``forgellm train`` sets up."""
    from forgellm.cpu_env import apply_cpu_env_defaults

    apply_cpu_env_defaults()  # before torch is imported
    from forgellm.models.resolve import describe
    from forgellm.training.engine_api import create_trainable

    config = _config(spec)
    trainable = create_trainable(config, describe(Path(spec["model"])))

    def step(tokens: np.ndarray, mask: np.ndarray) -> float:
        targets = int(mask[:, 1:].sum(dtype=np.int64))
        trainable.reseed(config.seed)
        loss_sum, _ = trainable.forward_backward(tokens, mask, 1.0 / max(targets, 1))
        trainable.optimizer_step(config.learning_rate, config.max_grad_norm)
        return loss_sum / max(targets, 1)

    return step


def _peft_loop(spec: dict[str, Any]) -> Callable[[np.ndarray, np.ndarray], float]:
    """The loop of the transformers and PEFT documentation: ``model(input_ids, labels).loss``, AdamW."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    model.config.use_cache = False
    if spec["fine_tune_type"] == "full":
        model.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=spec["lora_rank"],
                lora_alpha=spec["lora_alpha"],
                lora_dropout=0.0,
                task_type="CAUSAL_LM",
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
        )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec["learning_rate"], weight_decay=0.01)

    def step(tokens: np.ndarray, mask: np.ndarray) -> float:
        ids = torch.from_numpy(tokens.astype(np.int64))
        labels = ids.masked_fill(torch.from_numpy(mask == 0), -100)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    return step


def steps(contender: Contender, command: dict[str, Any]) -> dict[str, Any]:
    seconds, tokens, losses = 0.0, 0, []
    for _ in range(int(command["count"])):
        batch_tokens, batch_mask = contender.next_batch()
        started = time.perf_counter()
        losses.append(contender.step(batch_tokens, batch_mask))
        seconds += time.perf_counter() - started
        tokens += int(batch_mask[:, 1:].sum(dtype=np.int64))
    return {"seconds": seconds, "tokens": tokens, "loss": losses[-1] if losses else float("nan"), "losses": losses}


def memory(contender: Contender, command: dict[str, Any]) -> dict[str, Any]:
    from forgellm.training.engine_api import process_peak_rss_bytes

    answer: dict[str, Any] = {"peak_rss_bytes": process_peak_rss_bytes()}
    if contender.engine == "mlx":
        import mlx.core as mx

        answer["mlx_peak_bytes"] = mx.get_peak_memory()
    return answer


def products(contender: Contender, command: dict[str, Any], repeats: int = 5) -> dict[str, Any]:
    from forgellm.engines.blas import matmul_step

    seconds = 0.0
    for m, k, n, count in command["products"]:
        run = matmul_step(contender.engine, m, k, n)
        run()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        seconds += count * statistics.median(times)
    return {"seconds": seconds}


def profile(contender: Contender, command: dict[str, Any]) -> dict[str, Any]:
    """Steps under torch.profiler: how long the matrix products take inside a real step, with the
    caches and threads as the rest of the step leaves them (`products` times them alone)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    if contender.engine != "torch":
        raise ValueError("profile times torch kernels; this contender runs on mlx")
    with torch_profile(activities=[ProfilerActivity.CPU]) as profiler:
        answer = steps(contender, {"count": command["count"]})
    matmul = sum(event.self_cpu_time_total for event in profiler.key_averages() if event.key in MATMUL_OPS)
    return {"seconds": answer["seconds"], "matmul_seconds": matmul / 1e6}


if __name__ == "__main__":
    serve({"steps": steps, "products": products, "profile": profile, "memory": memory}, setup)
