"""Generation speed, side by side: ForgeLLM against the raw engines, for each engine.

For torch and for mlx, one process holds ForgeLLM's loaded model (the ``forgellm generate``
path), the engine's library alone (transformers ``model.generate`` with a streamer, or
``mlx_lm.stream_generate``) and a client of a ``forgellm server`` process (streaming over
HTTP). All get the same chat-formatted prompt ids, greedy, the same number of new tokens,
in rotating order, after a warm-up call each. Reported: decode tokens/s (tokens after the
first over the time after the first) and time to first token (from the call), medians over
the rounds, each against the raw engine measured in the same rounds.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.bench._common import Worker, embedded_model, tiny_model
from forgellm.engines import blas

PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


@dataclass
class Setting:
    tokens: int
    rounds: int
    server_engines: tuple[str, ...]


FULL = Setting(tokens=64, rounds=3, server_engines=("torch", "mlx"))
QUICK = Setting(tokens=12, rounds=1, server_engines=("torch",))


def run(quick: bool) -> list[dict[str, Any]]:
    setting = QUICK if quick else FULL
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="forgellm-bench-gen-") as tmp:
        model = tiny_model(Path(tmp) / "tiny") if quick else embedded_model()
        for engine in ("torch", "mlx"):
            out += compare(engine, model, setting)
    return out


def compare(engine: str, model: Path, setting: Setting) -> list[dict[str, Any]]:
    server = engine in setting.server_engines
    spec = {"engine": engine, "model": str(model), "prompt": PROMPT, "server": server}
    names = ["forgellm", "raw"] + (["server"] if server else [])
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    env = blas.subprocess_env() if engine == "mlx" else None
    with Worker("forgellm.bench._gen_worker", spec, env=env) as worker:
        # Warm-up; greedy stops at the same end of sequence for all, so all make the fewest any made.
        count = min(_count(worker.call({"command": "generate", "contender": name, "tokens": setting.tokens}))
                    for name in names)
        for round_ in range(setting.rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                answer = worker.call({"command": "generate", "contender": name, "tokens": count})
                timings[name].append(_timing(answer, count))
        worker.close()
    return _rows(engine, timings, count, setting)


def _count(answer: dict[str, Any]) -> int:
    return max(tokens for _, tokens in answer["seen"])


def _timing(answer: dict[str, Any], count: int) -> tuple[float, float]:
    """(time to first token in s, decode tokens/s) from when the call started and when tokens were seen."""
    started, seen = answer["started"], answer["seen"]
    first_time, first_count = seen[0]
    last_time, last_count = next((t, c) for t, c in seen if c >= count)
    decode = (last_count - first_count) / (last_time - first_time) if last_time > first_time else float("nan")
    return first_time - started, decode


def _rows(engine: str, timings: dict[str, list[tuple[float, float]]], count: int,
          setting: Setting) -> list[dict[str, Any]]:
    raw_ttft = statistics.median(t for t, _ in timings["raw"])
    raw_tps = statistics.median(d for _, d in timings["raw"])
    library = "transformers generate" if engine == "torch" else "mlx_lm.stream_generate"
    context = f"greedy, {count} new tokens, median of {setting.rounds}"
    out = []
    for name, label in (("forgellm", "cli"), ("server", "server")):
        if name not in timings:
            continue
        ttft = statistics.median(t for t, _ in timings[name])
        tps = statistics.median(d for _, d in timings[name])
        via = "ForgeLLM engine (forgellm generate path)" if name == "forgellm" else "forgellm server, HTTP SSE"
        out += [
            {"name": f"gen_{engine}_{label}_tokens_per_s", "value": round(tps, 2), "unit": "tokens/s",
             "baseline": round(raw_tps, 2), "ratio": round(tps / raw_tps, 3),
             "notes": f"decode speed, {via} vs {library}; {context}"},
            {"name": f"gen_{engine}_{label}_ttft_ms", "value": round(ttft * 1000, 1), "unit": "ms",
             "baseline": round(raw_ttft * 1000, 1), "ratio": round(ttft / raw_ttft, 3),
             "notes": f"time to first token; adds {(ttft - raw_ttft) * 1000:+.1f} ms over {library}; {context}"},
        ]
    return out
