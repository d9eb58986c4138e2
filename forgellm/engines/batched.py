"""Generation for many prompts at once: one forward pass per token for the whole batch.

Used where answers are scored or stored, not streamed: greedily for ``forgellm eval --qa`` and
the QA metric during training, sampled (`BatchSampling`) for the replay set. Prompts are left
padded, so every prompt's last token sits in the last column and
the next tokens of all of them come out of one forward pass; the attention mask keeps the
padding out of every answer, so each greedy answer is the one a prompt alone gets.

- torch: transformers' ``generate`` (attention mask, positions from it, KV cache).
- mlx: mlx-lm's ``BatchGenerator`` (left-padded batches with a KV cache). A plain loop of our own
  over the model (one forward per token, left-padded ``BatchKVCache``) answered 16 questions only
  3-17% faster under load (noise-sized), so mlx-lm's stays: its per-step overhead is small next to
  the forward pass, whose speed is OpenBLAS's (`forgellm.engines.blas`).

Both take token ids and return, per prompt, the generated ids up to (not including) the first
end-of-sequence id, at most ``max_tokens`` of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# (prompts as token ids, max new tokens) -> generated token ids per prompt, end-of-sequence cut off
GreedyBatch = Callable[[list[list[int]], int], list[list[int]]]


@dataclass(frozen=True)
class BatchSampling:
    """Sampling instead of greedy decoding: temperature, nucleus and the seed of the whole batch."""

    temperature: float
    top_p: float = 1.0
    seed: int = 0


def cut_at_stop(ids: Iterable[int], stop_ids: set[int], max_tokens: int) -> list[int]:
    out: list[int] = []
    for token in ids:
        if token in stop_ids or len(out) >= max_tokens:
            break
        out.append(int(token))
    return out


def torch_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    stop_ids: set[int],
    sample: BatchSampling | None = None,
) -> list[list[int]]:
    """``model``: a transformers causal LM (or a PEFT model around one), in eval mode; greedy unless ``sample``."""
    import torch

    if not prompts:
        return []
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    pad = min(stop_ids) if stop_ids else 0  # any id: the mask hides it
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    decoding: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None}
    if sample is not None:
        torch.manual_seed(sample.seed)
        decoding = {"do_sample": True, "temperature": sample.temperature, "top_p": sample.top_p}
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_tokens,
            **decoding,
            num_beams=1,
            top_k=None,
            repetition_penalty=None,
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=pad,
            use_cache=True,
        )
    return [cut_at_stop(row[width:].tolist(), stop_ids, max_tokens) for row in out]


def mlx_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    stop_ids: set[int],
    sample: BatchSampling | None = None,
    batch_size: int | None = None,
) -> list[list[int]]:
    """``model``: an mlx-lm model; greedy unless ``sample``; all prompts go in one batch unless
    ``batch_size`` is smaller."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    if not prompts:
        return []
    size = batch_size or len(prompts)
    sampler = None
    if sample is not None:
        mx.random.seed(sample.seed)
        sampler = make_sampler(temp=sample.temperature, top_p=sample.top_p)
    generator = BatchGenerator(
        model,
        stop_tokens=[[t] for t in sorted(stop_ids)],
        completion_batch_size=size,
        prefill_batch_size=size,
        sampler=sampler,
    )
    try:
        uids = generator.insert([list(p) for p in prompts], [max_tokens] * len(prompts))
        results: dict[int, list[int]] = {uid: [] for uid in uids}
        while responses := generator.next_generated():
            for response in responses:
                if response.finish_reason != "stop":  # a stop token ends the answer and is not part of it
                    results[response.uid].append(int(response.token))
    finally:
        generator.close()
    return [cut_at_stop(results[uid], stop_ids, max_tokens) for uid in uids]
