"""Training speed, side by side: ForgeLLM's trainables against what a user would run instead.

- torch engine vs the plain transformers + PEFT loop (``_train_worker.peft_loop``);
- mlx engine vs the ``mlx_lm.lora`` command (its own per-step tokens/s report).

Both LoRA (rank 16, alpha 32, all seven projections, as ``configs/cpt-sample.yaml``) and full
fine-tuning, on the embedded model and the sample CPT documents packed by the data pipeline
(batch 4 x 128 tokens, so the whole benchmark fits in minutes on 2 cores; every sequence is
full, so every contender's tokens are useful tokens: targets, no padding). Each contender runs
in its own process after warm-up steps; the parent alternates them in rounds (A B, B A, ...) so
both see the same machine load. A single step's time moves by a third between rounds on a
shared host, so the figures are medians over the rounds: tokens/s of each contender, and the
ratio as the median of the rounds' paired ratios (ours / theirs in the same round).

Model FLOPs utilisation counts the matmul FLOPs the step needs, against the machine's
measured matmul peak (`forgellm.bench.peak`): forward 2 FLOPs per weight per token, the
activation gradients the same again, weight gradients only for trained weights (a frozen
layer needs none: LoRA's step is about 4N, a full fine-tune's 6N), plus causal attention.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.bench._common import Worker, embedded_model, sample_sequences, tiny_model
from forgellm.bench.peak import measure_peaks
from forgellm.engines import blas

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MLX_KEYS = [f"self_attn.{t}" for t in LORA_TARGETS[:4]] + [f"mlp.{t}" for t in LORA_TARGETS[4:]]


@dataclass
class Setting:
    seq_length: int
    batch_size: int
    rounds: int  # measured rounds per contender
    steps: int  # optimizer steps per round
    warmup: int = 2
    lora_rank: int = 16
    lora_alpha: float = 32.0
    learning_rate: float = 1e-4
    types: tuple[str, ...] = ("lora", "full")


FULL = Setting(seq_length=128, batch_size=4, rounds=10, steps=1)  # single steps swing by a third here
PROFILED_STEPS = 2  # torch steps run under the profiler, after the timed ones
QUICK = Setting(seq_length=32, batch_size=2, rounds=1, steps=2, warmup=1, types=("lora",))


@dataclass
class Tally:
    rates: list[float] = field(default_factory=list)  # useful tokens/s of each round
    peak_rss_bytes: int = 0
    products_seconds: float = 0.0  # the step's weight products timed alone (ForgeLLM's side only)
    products_in_step_seconds: float = 0.0  # ... and inside its steps, per step (torch.profiler; torch only)
    losses: list[float] = field(default_factory=list)

    def add(self, answer: dict[str, Any]) -> None:
        self.rates.append(answer["tokens"] / answer["seconds"])
        self.losses.append(answer["loss"])

    @property
    def tokens_per_second(self) -> float:
        return statistics.median(self.rates)


def paired_ratio(ours: Tally, theirs: Tally) -> float:
    """Median over the rounds of ours / theirs in the same round: a slow moment of the host
    weighs on both sides of one pair, not on one contender's total."""
    return statistics.median(a / b for a, b in zip(ours.rates, theirs.rates, strict=True))


def run(quick: bool) -> list[dict[str, Any]]:
    setting = QUICK if quick else FULL
    peak = measure_peaks(quick=quick)["machine"]
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="forgellm-bench-train-") as tmp:
        root = Path(tmp)
        model = tiny_model(root / "tiny") if quick else embedded_model()
        tokens, mask = sample_sequences(root / "workspace", model, setting.seq_length)
        data = root / "data.npz"
        np.savez(data, tokens=tokens, mask=mask)
        model_config = json.loads((model / "config.json").read_text())
        for fine_tune_type in setting.types:
            common = {
                "model": str(model),
                "data": str(data),
                "fine_tune_type": fine_tune_type,
                "seq_length": setting.seq_length,
                "batch_size": setting.batch_size,
                "lora_rank": setting.lora_rank,
                "lora_alpha": setting.lora_alpha,
                "learning_rate": setting.learning_rate,
            }
            for engine, contender in (("torch", "transformers+PEFT loop"), ("mlx", "mlx_lm.lora")):
                spec = _pair_spec(common, model_config, setting, engine)
                pair = (
                    _torch_pair(spec, setting)
                    if engine == "torch"
                    else _mlx_pair(spec, setting, tokens, root / f"mlx-lm-{fine_tune_type}")
                )
                out += _rows(
                    f"{fine_tune_type}_{engine}",
                    *pair,
                    contender,
                    flops_per_token(model_config, setting, spec["products"]),
                    peak,
                    setting,
                    product_flops(spec["products"]),
                )
    return out


def _pair_spec(common: dict[str, Any], model_config: dict[str, Any], setting: Setting, engine: str) -> dict[str, Any]:
    """Both sides of a pair train the same weights. A full fine-tune in the PEFT loop trains every
    weight (``model.requires_grad_(True)``), as ForgeLLM's ``num_layers: -1`` does; ``mlx_lm.lora``
    trains the blocks only (its embedding, tied to the output layer, stays frozen), so ForgeLLM's
    mlx side gets ``num_layers`` = the model's block count, which trains exactly those."""
    blocks_only = engine == "mlx"
    trains_head = common["fine_tune_type"] == "full" and not blocks_only
    return {
        **common,
        "num_layers": model_config["num_hidden_layers"] if blocks_only else -1,
        "products": step_products(model_config, setting, common["fine_tune_type"], trains_head),
    }


def _torch_pair(spec: dict[str, Any], setting: Setting) -> tuple[Tally, Tally]:
    tallies = (Tally(), Tally())
    with (
        Worker("forgellm.bench._train_worker", {**spec, "contender": "forgellm-torch"}) as ours,
        Worker("forgellm.bench._train_worker", {**spec, "contender": "peft-loop"}, env=_plain_env()) as theirs,
    ):
        workers = (ours, theirs)
        for worker in workers:
            worker.call({"command": "steps", "count": setting.warmup})
        for round_ in range(setting.rounds):
            for index in (0, 1) if round_ % 2 == 0 else (1, 0):  # A B, then B A: drifts cancel
                tallies[index].add(workers[index].call({"command": "steps", "count": setting.steps}))
        # Memory first: the products' matrices and the profiler's records are not the step's.
        tallies[0].peak_rss_bytes = ours.call({"command": "peak_rss"})["peak_rss_bytes"]
        tallies[0].products_seconds = ours.call({"command": "products", "products": spec["products"]})["seconds"]
        profiled = ours.call({"command": "profile", "count": PROFILED_STEPS})
        tallies[0].products_in_step_seconds = profiled["matmul_seconds"] / PROFILED_STEPS
        tallies[1].peak_rss_bytes = theirs.close()["peak_rss_bytes"]
    return tallies


def _mlx_pair(spec: dict[str, Any], setting: Setting, tokens: np.ndarray, folder: Path) -> tuple[Tally, Tally]:
    ours, theirs = Tally(), Tally()
    lora = MlxLoraCommand(spec, setting, tokens, folder)
    with Worker(
        "forgellm.bench._train_worker", {**spec, "contender": "forgellm-mlx"}, env=blas.subprocess_env()
    ) as worker:
        worker.call({"command": "steps", "count": setting.warmup})
        for round_ in range(setting.rounds):
            for index in (0, 1) if round_ % 2 == 0 else (1, 0):
                if index == 0:
                    ours.add(worker.call({"command": "steps", "count": setting.steps}))
                else:
                    lora.run_into(theirs)
        ours.peak_rss_bytes = worker.call({"command": "peak_rss"})["peak_rss_bytes"]  # before the products' matrices
        ours.products_seconds = worker.call({"command": "products", "products": spec["products"]})["seconds"]
    return ours, theirs


def _plain_env() -> dict[str, str]:
    """The environment without ForgeLLM's threading defaults: what a user's own script runs in."""
    from forgellm.cpu_env import APPLIED_ENV

    return {name: value for name, value in os.environ.items() if name not in APPLIED_ENV}


class MlxLoraCommand:
    """``python -m mlx_lm lora`` on the same sequences (as text), config and optimizer, with the
    optimized BLAS preloaded; the warm-up steps' reports are dropped, the others' tokens/s kept."""

    REPORT = re.compile(r"^\s*(\d+)\s+([\d.]+|nan)\s*\S*\s+([\d,]+)\s+[\d.]+k\s*$")

    def __init__(self, spec: dict[str, Any], setting: Setting, tokens: np.ndarray, folder: Path):
        from transformers import AutoTokenizer

        self.setting = setting
        self.step_tokens = setting.batch_size * (setting.seq_length - 1)
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        # Each sequence minus its last token, as text: mlx-lm encodes it and appends EOS.
        lines = [json.dumps({"text": tokenizer.decode(row[:-1].tolist())}) for row in tokens]
        (folder / "data").mkdir(exist_ok=True)
        (folder / "data" / "train.jsonl").write_text("\n".join(lines) + "\n")
        config = {
            "model": spec["model"],
            "train": True,
            "data": str(folder / "data"),
            "fine_tune_type": spec["fine_tune_type"],
            "optimizer": "adamw",
            "optimizer_config": {"adamw": {"weight_decay": 0.01}},
            "num_layers": -1,
            "batch_size": setting.batch_size,
            "iters": setting.warmup + setting.steps,
            "learning_rate": setting.learning_rate,
            "steps_per_report": 1,
            "steps_per_eval": 10**9,
            "save_every": 10**9,
            "adapter_path": str(folder / "adapters"),
            "max_seq_length": setting.seq_length,
            "seed": 0,
            "grad_checkpoint": False,
            "lora_parameters": {
                "rank": setting.lora_rank,
                "scale": setting.lora_alpha / setting.lora_rank,
                "dropout": 0.0,
                "keys": MLX_KEYS,
            },
        }
        import yaml

        self.config_path = folder / "lora.yaml"
        self.config_path.write_text(yaml.safe_dump(config))

    def run_into(self, tally: Tally) -> None:
        """One round: a fresh ``mlx_lm lora`` process; its measured steps make one entry of ``tally``."""
        env = blas.subprocess_env(_plain_env())
        env["NO_COLOR"] = "1"
        process = subprocess.Popen(
            [sys.executable, "-m", "mlx_lm", "lora", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)  # its own peak memory (not other children's)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"mlx_lm lora failed ({process.returncode}): {output[-2000:]}")
        plain = ANSI.sub("", output)
        reports = {
            int(m.group(1)): (float(m.group(2)), float(m.group(3).replace(",", "")))
            for m in map(self.REPORT.match, plain.splitlines())
            if m
        }
        measured = [reports[i] for i in sorted(reports) if i > self.setting.warmup]
        if len(measured) != self.setting.steps:
            raise RuntimeError(
                f"mlx_lm lora printed {len(reports)} step reports, expected "
                f"{self.setting.warmup + self.setting.steps}: {output[-2000:]}"
            )
        tally.add(
            {
                "seconds": sum(self.step_tokens / rate for _, rate in measured),
                "tokens": self.step_tokens * len(measured),
                "loss": measured[-1][0],
            }
        )
        rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        tally.peak_rss_bytes = max(tally.peak_rss_bytes, rss)


def _projection_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection of a decoder block."""
    d, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim") or d // heads
    return {
        "q_proj": (d, heads * head_dim),
        "k_proj": (d, kv_heads * head_dim),
        "v_proj": (d, kv_heads * head_dim),
        "o_proj": (heads * head_dim, d),
        "gate_proj": (d, inter),
        "up_proj": (d, inter),
        "down_proj": (inter, d),
    }


def step_products(
    config: dict[str, Any], setting: Setting, fine_tune_type: str, trains_head: bool
) -> list[tuple[int, int, int, int]]:
    """The weight products of one training step as ``(m, k, n, count)``: an (m x k) by (k x n)
    product, ``count`` times. Forward ``x W``; the input gradient ``g W^T``; a weight gradient
    ``g^T x`` only for trained weights (a frozen layer needs none; the output layer's when
    ``trains_head``); LoRA's rank-r adapters their six small products each. Attention (no
    weights) is not among them."""
    m = setting.batch_size * (setting.seq_length - 1)
    layers, r = config["num_hidden_layers"], setting.lora_rank
    counts: Counter[tuple[int, int, int]] = Counter()
    for name, (i, o) in _projection_shapes(config).items():
        counts[(m, i, o)] += layers  # forward
        counts[(m, o, i)] += layers  # input gradient
        if fine_tune_type == "full":
            counts[(o, m, i)] += layers  # weight gradient
        elif name in LORA_TARGETS:
            for shape in ((m, i, r), (m, r, o), (m, o, r), (m, r, i), (o, m, r), (r, m, i)):
                counts[shape] += layers  # down, up; their input gradients; their weight gradients
    d, vocab = config["hidden_size"], config["vocab_size"]
    counts[(m, d, vocab)] += 1  # the output layer (tied to the embedding)
    counts[(m, vocab, d)] += 1
    if trains_head:
        counts[(vocab, m, d)] += 1
    return [(*shape, count) for shape, count in counts.items()]


def product_flops(products: list[tuple[int, int, int, int]]) -> int:
    return sum(2 * m * k * n * count for m, k, n, count in products)


def flops_per_token(config: dict[str, Any], setting: Setting, products: list[tuple[int, int, int, int]]) -> float:
    """Matmul FLOPs of one training step per useful token (see the module docstring): the weight
    ``products`` (`step_products`), plus causal attention's (QK^T and AV: half the square; the
    backward twice that)."""
    tokens = setting.batch_size * (setting.seq_length - 1)
    weights = product_flops(products)
    heads, d = config["num_attention_heads"], config["hidden_size"]
    head_dim = config.get("head_dim") or d // heads
    attention = 2 * 2 * heads * head_dim * setting.seq_length / 2
    return weights / tokens + 3 * config["num_hidden_layers"] * attention


def _rows(
    label: str,
    ours: Tally,
    theirs: Tally,
    contender: str,
    flops: float,
    peak_gflops: float,
    setting: Setting,
    product_flops: float = 0.0,
) -> list[dict[str, Any]]:
    shape = (
        f"batch {setting.batch_size} x {setting.seq_length} tokens, {setting.rounds} rounds of "
        f"{setting.steps} step(s) each, medians; ratio: median of the rounds' paired ratios"
    )
    mfu_ours = flops * ours.tokens_per_second / (peak_gflops * 1e9)
    mfu_theirs = flops * theirs.tokens_per_second / (peak_gflops * 1e9)
    ratio = round(paired_ratio(ours, theirs), 3)
    return [
        {
            "name": f"train_{label}_tokens_per_s",
            "value": round(ours.tokens_per_second, 2),
            "unit": "tokens/s",
            "baseline": round(theirs.tokens_per_second, 2),
            "ratio": ratio,
            "notes": f"useful (target) tokens/s vs {contender}; {shape}; last loss {ours.losses[-1]:.3f} vs "
            f"{theirs.losses[-1]:.3f}",
        },
        {
            "name": f"train_{label}_mfu",
            "value": _sig(mfu_ours),
            "unit": "fraction of peak",
            "baseline": _sig(mfu_theirs),
            "ratio": ratio,
            "notes": f"{flops / 1e6:.0f} MFLOP per token against the machine's {peak_gflops:.1f} GFLOP/s matmul peak",
        },
        *_ceiling_rows(label, ours, mfu_ours, product_flops, peak_gflops),
        {
            "name": f"train_{label}_peak_memory",
            "value": round(ours.peak_rss_bytes / 1e9, 3),
            "unit": "GB",
            "baseline": round(theirs.peak_rss_bytes / 1e9, 3),
            "ratio": _ratio(ours.peak_rss_bytes, theirs.peak_rss_bytes),
            "notes": f"peak resident memory of the process vs {contender}'s",
        },
    ]


def _ceiling_rows(
    label: str, ours: Tally, mfu: float, product_flops: float, peak_gflops: float
) -> list[dict[str, Any]]:
    """The MFU a step would reach if it were nothing but its weight products, and the step's share
    of it: the products timed alone at their shapes in ForgeLLM's own worker (same library, same
    threads), and (torch) at the speed they ran inside ForgeLLM's steps, caches and threads as the
    rest of the step left them."""
    ways = (
        (
            "products_ceiling",
            ours.products_seconds,
            "timed alone at their shapes in the same process: the MFU of a step that did nothing else",
        ),
        (
            "products_in_step",
            ours.products_in_step_seconds,
            f"at the speed they ran inside {PROFILED_STEPS} of ForgeLLM's steps (torch.profiler, the matmul "
            f"kernels' own time): the MFU of the step if all its other work took no time",
        ),
    )
    rows = []
    for measure, seconds, how in ways:
        if not seconds:
            continue
        ceiling = product_flops / seconds / (peak_gflops * 1e9)
        rows.append(
            {
                "name": f"train_{label}_{measure}",
                "value": _sig(ceiling),
                "unit": "fraction of peak",
                "baseline": None,
                "ratio": _ratio(mfu, ceiling),
                "notes": f"the step's weight products ({product_flops / 1e9:.0f} GFLOP, attention not "
                f"included) {how}; ratio: the step's MFU over it",
            }
        )
    return rows


def _sig(value: float) -> float:
    return float(f"{value:.4g}")


def _ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs else None
