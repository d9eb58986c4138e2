"""Greedy generation for many prompts at once: one forward pass per token for the whole batch.

Used where answers are scored, not streamed (``forgellm eval --qa``, the QA metric during
training). Prompts are left padded, so every prompt's last token sits in the last column and
the next tokens of all of them come out of one forward pass; the attention mask keeps the
padding out of every answer, so each answer is the one a prompt alone gets (greedy).

- torch: transformers' ``generate`` (attention mask, positions from it, KV cache), greedy.
- mlx: mlx-lm's ``BatchGenerator`` (left-padded batches with a KV cache), greedy sampler.

Both take token ids and return, per prompt, the generated ids up to (not including) the first
end-of-sequence id, at most ``max_tokens`` of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

# (prompts as token ids, max new tokens) -> generated token ids per prompt, end-of-sequence cut off
GreedyBatch = Callable[[list[list[int]], int], list[list[int]]]


def cut_at_stop(ids: Iterable[int], stop_ids: set[int], max_tokens: int) -> list[int]:
    out: list[int] = []
    for token in ids:
        if token in stop_ids or len(out) >= max_tokens:
            break
        out.append(int(token))
    return out


def torch_greedy(model: Any, prompts: Sequence[Sequence[int]], max_tokens: int, stop_ids: set[int]) -> list[list[int]]:
    """``model``: a transformers causal LM (or a PEFT model around one), in eval mode."""
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
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_tokens,
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=None,
            eos_token_id=sorted(stop_ids) or None,
            pad_token_id=pad,
            use_cache=True,
        )
    return [cut_at_stop(row[width:].tolist(), stop_ids, max_tokens) for row in out]


def mlx_greedy(
    model: Any, prompts: Sequence[Sequence[int]], max_tokens: int, stop_ids: set[int], batch_size: int | None = None
) -> list[list[int]]:
    """``model``: an mlx-lm model; all prompts go in one batch unless ``batch_size`` is smaller."""
    from mlx_lm.generate import BatchGenerator

    if not prompts:
        return []
    size = batch_size or len(prompts)
    generator = BatchGenerator(
        model, stop_tokens=[[t] for t in sorted(stop_ids)], completion_batch_size=size, prefill_batch_size=size
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
