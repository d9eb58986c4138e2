"""QA evaluation speed: the sample's held-out questions answered in batches against one at a time.

Both sides answer the same chat-formatted questions greedily with the same loaded model, in one
process per engine (mlx in a child given the optimized BLAS as every mlx process gets it,
`forgellm.engines.blas.subprocess_env`): one at a time through the streaming path every question took before (``generate``,
what the Testing tab and the server use), and batched (`forgellm.engines.batched`: left padding,
one forward pass per token for the batch, 16 questions a batch as ``forgellm eval --qa``).
Reported: the batched time, the one-at-a-time time as baseline, their ratio, and in the notes
the speed-up and how many answers are identical (greedy: all should be).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from forgellm.bench._common import Worker, embedded_model, serve, tiny_model

FULL_TOKENS = 48  # `forgellm eval`'s default --max-tokens
QUICK = {"questions": 8, "tokens": 8}


def run(quick: bool) -> list[dict[str, Any]]:
    from forgellm.data.sample.generator import heldout_questions

    items = heldout_questions("chat") + heldout_questions("document")  # the sample's 63 questions
    with tempfile.TemporaryDirectory(prefix="forgellm-bench-qa-") as tmp:
        model = tiny_model(Path(tmp) / "tiny") if quick else embedded_model()
        if quick:
            items = items[: QUICK["questions"]]
        tokens = QUICK["tokens"] if quick else FULL_TOKENS
        return [measure(model, items, "torch", tokens), measure_mlx(model, items, tokens)]


def measure_mlx(model_dir: Path, items: list[dict], max_tokens: int) -> dict[str, Any]:
    """`measure` on the mlx engine, in a child process with the optimized BLAS preloaded."""
    from forgellm.engines import blas

    spec = {"model": str(model_dir), "items": items, "max_tokens": max_tokens}
    with Worker("forgellm.bench.qa_batched", spec, env=blas.subprocess_env()) as worker:
        row = worker.call({"command": "measure"})
        worker.close()
    return row


def measure(model_dir: Path, items: list[dict], engine: str, max_tokens: int) -> dict[str, Any]:
    from forgellm.engines import SamplingParams, load_model
    from forgellm.training.qa import DEFAULT_BATCH_SIZE, QASet

    for item in items:  # what read_qa adds to each record
        item["accepted"] = [item["answer"], *item.get("aliases", [])]
    model = load_model(str(model_dir), engine=engine)
    try:
        questions = QASet(items, model.tokenizer)
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        model.greedy_batch(questions.prompts[:2], 2)  # warm-up of both paths
        tic = time.perf_counter()
        alone = [
            "".join(
                c.text
                for c in model.generate(model.format_prompt([{"role": "user", "content": i["question"]}]), params)
            ).strip()
            for i in items
        ]
        alone_s = time.perf_counter() - tic
        tic = time.perf_counter()
        batched = questions.answer(model.greedy_batch, max_tokens, DEFAULT_BATCH_SIZE)
        batched_s = time.perf_counter() - tic
    finally:
        model.close()
    same = sum(a == b["answer"] for a, b in zip(alone, batched.answers))
    # In milliseconds to a tenth: the quick run's times are fractions of a second, and the ratio must
    # stay what the two reported figures say.
    return {
        "name": f"qa_batched_{engine}",
        "value": round(batched_s * 1000, 1),
        "unit": "ms",
        "baseline": round(alone_s * 1000, 1),
        "ratio": round(batched_s / alone_s, 4),
        "notes": f"{len(items)} questions, {max_tokens} tokens max, batches of {DEFAULT_BATCH_SIZE}: "
        f"{alone_s / batched_s:.1f}x faster than one at a time; {same}/{len(items)} answers identical; "
        f"QA accuracy {batched.accuracy:.1%}",
    }


def _measure_command(spec: dict[str, Any], command: dict[str, Any]) -> dict[str, Any]:
    return measure(Path(spec["model"]), spec["items"], "mlx", spec["max_tokens"])


if __name__ == "__main__":  # the mlx child of `measure_mlx`
    serve({"measure": _measure_command}, lambda spec: spec)
