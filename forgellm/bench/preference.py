"""A DPO step: ForgeLLM's torch engine against TRL's ``DPOTrainer`` on the same model, pairs and batch.

Both train a new LoRA adapter (rank 8, the default target modules) with DPO (beta 0.1, the
reference from the adapter switched off in both) on the sample preference pairs, prepared by
ForgeLLM's pipeline (chat template, 128 tokens). ForgeLLM's step is what its loop runs
(``pair_backward`` + ``optimizer_step``); TRL's is ``DPOTrainer._compute_loss`` on the same
batch in TRL's layout (padded to the batch's longest pair, as its collator pads), its backward,
gradient clipping and AdamW: the work of one ``DPOTrainer`` training step without the
``Trainer`` bookkeeping around it. Both live in this process and take turns, round by round; the
ratio is the median of the rounds' paired ratios. Tokens are the response tokens of both sides.
Full run: the embedded model; quick: the tests' tiny llama.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.bench._common import embedded_model, tiny_model

SEQ_LENGTH = 128
BATCH = 2
LR = 1e-4
BETA = 0.1
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run(quick: bool) -> list[dict[str, Any]]:
    rounds, steps = (2, 2) if quick else (5, 3)
    with tempfile.TemporaryDirectory(prefix="forgellm-bench-preference-") as tmp:
        workspace = Path(tmp)
        model = tiny_model(workspace / "tiny") if quick else embedded_model()
        pairs = _pairs(workspace, model)
        ours, theirs = _forgellm(model), _trl(model, workspace)
        batches = [pairs.rows(slice(i, i + BATCH)) for i in range(0, len(pairs) - BATCH + 1, BATCH)]
        ours(batches[0]), theirs(batches[0])  # warm-up: first-step allocations and TRL's lazy set-up
        tallies: dict[str, list[tuple[float, int]]] = {"ours": [], "theirs": []}
        for r in range(rounds):
            chosen = [batches[(r * steps + s + 1) % len(batches)] for s in range(steps)]
            for name, step in (("ours", ours), ("theirs", theirs)):
                tallies[name].append(_timed(step, chosen))
    speed = {name: sum(t for _, t in rows) / sum(s for s, _ in rows) for name, rows in tallies.items()}
    ratios = [(t1 / s1) / (t2 / s2) for (s1, t1), (s2, t2) in zip(tallies["ours"], tallies["theirs"])]
    import trl

    return [
        {
            "name": "train_dpo_lora_torch_tokens_per_s",
            "value": round(speed["ours"], 2),
            "unit": "tokens/s",
            "baseline": round(speed["theirs"], 2),
            "ratio": round(statistics.median(ratios), 3),
            "notes": f"DPO step, LoRA r8, {Path(model).name}, batch {BATCH} pairs x {SEQ_LENGTH} tokens, sample "
            f"preference pairs; baseline: TRL {trl.__version__} DPOTrainer's loss + backward + AdamW on the "
            f"same batches; {rounds} rounds x {steps} steps, ratio: median of the paired ratios",
        }
    ]


def _timed(step: Callable[[Any], int], batches: list[Any]) -> tuple[float, int]:
    started, tokens = time.perf_counter(), 0
    for batch in batches:
        tokens += step(batch)
    return time.perf_counter() - started, tokens


def _pairs(workspace: Path, model: Path):
    from transformers import AutoTokenizer

    from forgellm.data.pipeline import prepare_dataset
    from forgellm.data.sample.generator import write_sample
    from forgellm.data.settings import DataSettings

    write_sample(workspace / "dataset" / "sample")
    settings = DataSettings(
        input_dir=workspace / "dataset" / "sample" / "preference",
        training_type="preference",
        max_seq_length=SEQ_LENGTH,
        validation_split=0.1,
    )
    return prepare_dataset(settings, AutoTokenizer.from_pretrained(str(model)), workspace).train


def _forgellm(model: Path) -> Callable[[Any], int]:
    from forgellm.models.resolve import describe
    from forgellm.training.config import TrainingConfig
    from forgellm.training.torch_trainable import TorchTrainable

    config = TrainingConfig(
        model_name=str(model),
        engine="torch",
        training_type="preference",
        preference_loss="dpo",
        beta=BETA,
        fine_tune_type="lora",
        max_seq_length=SEQ_LENGTH,
        batch_size=BATCH,
        learning_rate=LR,
        seed=0,
    )
    trainable = TorchTrainable(config, describe(model))

    def step(batch) -> int:
        trainable.pair_backward(batch, 1.0 / len(batch.tokens))
        trainable.optimizer_step(LR, config.max_grad_norm)
        return int(batch.mask[:, :, 1:].sum())

    return step


def _trl(model: Path, workspace: Path) -> Callable[[Any], int]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    args = DPOConfig(
        output_dir=str(workspace / "trl"),
        beta=BETA,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "Hi", "chosen": " a", "rejected": " b"}] * 2),
        processing_class=AutoTokenizer.from_pretrained(str(model)),
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"),
    )
    trainer.model.train()
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)

    def step(batch) -> int:
        used = int(np.flatnonzero(batch.mask.any(axis=(0, 1))).max()) + 1
        tokens = np.concatenate([batch.tokens[:, 0], batch.tokens[:, 1]])[:, :used].astype(np.int64)
        mask = np.concatenate([batch.mask[:, 0], batch.mask[:, 1]])[:, :used].astype(np.int64)
        real = np.zeros_like(mask)
        for row in range(len(mask)):
            real[row, : int(np.flatnonzero(mask[row]).max()) + 1] = 1
        inputs = {
            "input_ids": torch.from_numpy(tokens),
            "attention_mask": torch.from_numpy(real),
            "completion_mask": torch.from_numpy(mask),
        }
        trainer._compute_loss(trainer.model, inputs, return_outputs=False).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return int(batch.mask[:, :, 1:].sum())

    return step
