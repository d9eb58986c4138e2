"""QLoRA's memory and speed: the same LoRA training on the float32 base and on that base quantized
in memory to 8 and 4 bits (``quantization: 8bit|4bit``, mlx engine), side by side.

Each base trains in its own worker process (`forgellm.bench._train_worker`'s mlx contender,
driven as the training loop drives it, OpenBLAS preloaded as ``forgellm train`` has it) on the
same sequences (the sample CPT documents packed by the data pipeline), batch, LoRA settings,
seed and steps. Warm-up steps first (the first compiles the step), then rounds in which each
process trains its steps, in an order that rotates from round to round, so a busy moment of the
shared host falls on each base in turn. Per quantized base, against float32:

- tokens/s: median over the rounds; ratio: median of the rounds' paired ratios;
- mlx peak: the allocator's peak while training (``mx.get_peak_memory``, reset after the set-up):
  the weights, activations, adapters and optimizer state;
- peak resident memory: the whole process, the load included (in-memory quantization briefly
  holds the float32 weights beside the quantized ones): what the machine must have;
- first and last train loss (the same batches): what quantizing the base costs in quality.

Full: the embedded model; quick: the tests' tiny llama (hidden size 64, so its projections
quantize in groups of 64 as the embedded model's do).

``python -m forgellm.bench.qlora RESULTS.json`` prints the table of docs/training.md (one line
per base) from the output of ``forgellm bench --only qlora --json``.
"""

from __future__ import annotations

import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.bench._common import Worker, embedded_model, sample_sequences, suite_results, tiny_model
from forgellm.bench.training import Setting, Tally, paired_ratio
from forgellm.engines import blas

BASES = ("float32", "8bit", "4bit")  # the first is the baseline of the others
# Small: on mlx's CPU backend a quantized step runs about 5x slower than the float32 one with
# OpenBLAS (BENCHMARKS.md), so one of the training bench's 4 x 128 tokens takes minutes on 2 cores.
FULL = Setting(seq_length=64, batch_size=1, rounds=3, steps=1, warmup=1, lora_rank=8, lora_alpha=16.0, types=("lora",))
QUICK = Setting(seq_length=32, batch_size=2, rounds=1, steps=2, warmup=1, lora_rank=8, lora_alpha=16.0)


@dataclass
class Measured:
    """One base's figures: its rounds (tokens/s, last losses, peak resident memory), the first
    warm-up step's loss and mlx's peak."""

    tally: Tally = field(default_factory=Tally)
    first_loss: float = math.nan
    mlx_peak_bytes: int = 0


def run(quick: bool) -> list[dict[str, Any]]:
    setting = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="forgellm-bench-qlora-") as tmp:
        root = Path(tmp)
        model = tiny_model(root / "tiny") if quick else embedded_model()
        tokens, mask = sample_sequences(root / "workspace", model, setting.seq_length)
        data = root / "data.npz"
        np.savez(data, tokens=tokens, mask=mask)
        spec = {
            "contender": "forgellm-mlx",
            "model": str(model),
            "data": str(data),
            "fine_tune_type": "lora",
            "num_layers": -1,
            "seq_length": setting.seq_length,
            "batch_size": setting.batch_size,
            "lora_rank": setting.lora_rank,
            "lora_alpha": setting.lora_alpha,
            "learning_rate": setting.learning_rate,
        }
        measured = _measure(spec, setting)
    return rows(measured, setting, model.name)


def _measure(spec: dict[str, Any], setting: Setting) -> dict[str, Measured]:
    measured = {base: Measured() for base in BASES}
    env = blas.subprocess_env()
    workers: dict[str, Worker] = {}
    try:
        for base in BASES:  # one at a time: each load (and its quantization) gets the CPU to itself
            quantization = "none" if base == "float32" else base
            workers[base] = Worker("forgellm.bench._train_worker", {**spec, "quantization": quantization}, env=env)
            warmup = workers[base].call({"command": "steps", "count": setting.warmup})
            measured[base].first_loss = warmup["losses"][0]
        for round_ in range(setting.rounds):
            order = BASES[round_ % len(BASES) :] + BASES[: round_ % len(BASES)]
            for base in order:
                measured[base].tally.add(workers[base].call({"command": "steps", "count": setting.steps}))
        for base, worker in workers.items():
            memory = worker.call({"command": "memory"})
            measured[base].tally.peak_rss_bytes = memory["peak_rss_bytes"]
            measured[base].mlx_peak_bytes = memory["mlx_peak_bytes"]
            worker.close()
    finally:
        for worker in workers.values():
            worker.__exit__()
    return measured


def rows(measured: dict[str, Measured], setting: Setting, model: str) -> list[dict[str, Any]]:
    """Per quantized base, each measure against float32's (the baseline) with their ratio."""
    shape = (
        f"{model}, LoRA r{setting.lora_rank} on all projections, batch {setting.batch_size} x "
        f"{setting.seq_length} tokens, {setting.warmup} warm-up step(s), {setting.rounds} rounds of "
        f"{setting.steps} step(s)"
    )
    full = measured["float32"]
    out = []
    for base in BASES[1:]:
        q = measured[base]
        figures = (
            (
                "tokens_per_s",
                q.tally.tokens_per_second,
                full.tally.tokens_per_second,
                "tokens/s",
                paired_ratio(q.tally, full.tally),
                f"useful (target) tokens/s, median of the rounds vs the float32 base; ratio: median of the "
                f"rounds' paired ratios; {shape}",
            ),
            (
                "mlx_peak_memory",
                q.mlx_peak_bytes / 1e9,
                full.mlx_peak_bytes / 1e9,
                "GB",
                None,
                "mlx's peak while training (weights, activations, adapters, optimizer; not the load)",
            ),
            (
                "peak_rss",
                q.tally.peak_rss_bytes / 1e9,
                full.tally.peak_rss_bytes / 1e9,
                "GB",
                None,
                "peak resident memory of the whole process, the load (and in-memory quantization) included",
            ),
            ("first_loss", q.first_loss, full.first_loss, "loss", None, "train loss of the first step"),
            ("last_loss", q.tally.losses[-1], full.tally.losses[-1], "loss", None, "train loss of the last step"),
        )
        for measure, value, baseline, unit, ratio, notes in figures:
            out.append(
                {
                    "name": f"qlora_{base}_{measure}",
                    "value": round(value, 3 if unit == "GB" else 2 if unit == "tokens/s" else 4),
                    "unit": unit,
                    "baseline": round(baseline, 3 if unit == "GB" else 2 if unit == "tokens/s" else 4),
                    "ratio": round(ratio if ratio is not None else value / baseline, 3),
                    "notes": notes,
                }
            )
    return out


def base_table(results: list[dict[str, Any]]) -> str:
    """docs/training.md's table, one line per base, from this suite's result rows."""
    by_name = {r["name"]: r for r in results}
    lines = [
        "| base | tokens/s | mlx peak (training) | process peak (resident) | first train loss | last train loss |",
        "|---|---|---|---|---|---|",
    ]
    measures = ("tokens_per_s", "mlx_peak_memory", "peak_rss", "first_loss", "last_loss")
    first = [by_name[f"qlora_{BASES[1]}_{m}"] for m in measures]
    lines.append("| float32 | " + " | ".join(_cell(r["baseline"], r["unit"]) for r in first) + " |")
    for base in BASES[1:]:
        cells = [by_name[f"qlora_{base}_{m}"] for m in measures]
        label = f"`quantization: {base}`"
        lines.append(
            f"| {label} | " + " | ".join(f"{_cell(r['value'], r['unit'])} (x{r['ratio']:.2f})" for r in cells) + " |"
        )
    return "\n".join(lines)


def _cell(value: float, unit: str) -> str:
    return f"{value:.2f} GB" if unit == "GB" else f"{value:.1f}" if unit == "tokens/s" else f"{value:.3f}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m forgellm.bench.qlora RESULTS.json  (from forgellm bench --json)")
    print(base_table(suite_results(Path(sys.argv[1]), "qlora")))
