"""Generation speed, side by side: ForgeLLM against the raw engines, for each engine.

For torch and for mlx, one process holds ForgeLLM's loaded model (the ``forgellm generate``
path), the engine's library alone (transformers ``model.generate`` with a streamer, or
``mlx_lm.stream_generate``) and a client of a ``forgellm server`` process (streaming over
HTTP). All get the same chat-formatted prompt ids, greedy, the same number of new tokens,
in rotating order, after a warm-up call each. Reported: decode tokens/s (tokens after the
first over the time after the first), median over the rounds, and time to first token (from
the call), median over separate rounds of one-token calls, against the raw engine measured in
the same rounds. A first token takes a few hundred milliseconds here, and this machine's noise
moves it by tens, so the time added over the raw engine is the median of the differences
within each round (paired), over many short rounds rather than a few long ones.
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
    rounds: int  # decode rounds
    ttft_rounds: int  # rounds of one-token calls
    server_engines: tuple[str, ...]


FULL = Setting(tokens=64, rounds=3, ttft_rounds=15, server_engines=("torch", "mlx"))
QUICK = Setting(tokens=12, rounds=1, ttft_rounds=2, server_engines=("torch",))


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
    decode: dict[str, list[float]] = {name: [] for name in names}
    ttft: dict[str, list[float]] = {name: [] for name in names}
    env = blas.subprocess_env() if engine == "mlx" else None
    with Worker("forgellm.bench._gen_worker", spec, env=env) as worker:
        # Warm-up; greedy stops at the same end of sequence for all, so all make the fewest any made.
        count = min(
            _count(worker.call({"command": "generate", "contender": name, "tokens": setting.tokens})) for name in names
        )
        for round_ in range(setting.rounds):
            for name in _rotated(names, round_):
                answer = worker.call({"command": "generate", "contender": name, "tokens": count})
                decode[name].append(_decode_speed(answer, count))
        for round_ in range(setting.ttft_rounds):
            for name in _rotated(names, round_):
                answer = worker.call({"command": "generate", "contender": name, "tokens": 1})
                ttft[name].append(answer["seen"][0][0] - answer["started"])
        worker.close()
    return _rows(engine, decode, ttft, count, setting)


def _rotated(names: list[str], round_: int) -> list[str]:
    """The contenders in this round's order: each goes first in turn."""
    return names[round_ % len(names) :] + names[: round_ % len(names)]


def _count(answer: dict[str, Any]) -> int:
    return max(tokens for _, tokens in answer["seen"])


def _decode_speed(answer: dict[str, Any], count: int) -> float:
    """Tokens per second after the first, from when the tokens were seen."""
    seen = answer["seen"]
    first_time, first_count = seen[0]
    last_time, last_count = next((t, c) for t, c in seen if c >= count)
    return (last_count - first_count) / (last_time - first_time) if last_time > first_time else float("nan")


def _rows(
    engine: str, decode: dict[str, list[float]], ttft: dict[str, list[float]], count: int, setting: Setting
) -> list[dict[str, Any]]:
    raw_tps, raw_ttft = statistics.median(decode["raw"]), statistics.median(ttft["raw"])
    library = "transformers generate" if engine == "torch" else "mlx_lm.stream_generate"
    out = []
    for name, label in (("forgellm", "cli"), ("server", "server")):
        if name not in decode:
            continue
        tps, first = statistics.median(decode[name]), statistics.median(ttft[name])
        added = sorted(ours - raw for ours, raw in zip(ttft[name], ttft["raw"]))
        quartiles = statistics.quantiles(added, n=4) if len(added) >= 2 else [added[0]] * 3
        via = "ForgeLLM engine (forgellm generate path)" if name == "forgellm" else "forgellm server, HTTP SSE"
        out += [
            {
                "name": f"gen_{engine}_{label}_tokens_per_s",
                "value": round(tps, 2),
                "unit": "tokens/s",
                "baseline": round(raw_tps, 2),
                "ratio": round(tps / raw_tps, 3),
                "notes": f"decode speed, {via} vs {library}; greedy, {count} new tokens, median of {setting.rounds}",
            },
            {
                "name": f"gen_{engine}_{label}_ttft_ms",
                "value": round(first * 1000, 2),
                "unit": "ms",
                "baseline": round(raw_ttft * 1000, 2),
                "ratio": round(first / raw_ttft, 3),
                "notes": f"time to first token, {via} vs {library}; adds {statistics.median(added) * 1000:+.1f} ms "
                f"(median of the paired differences; quartiles {quartiles[0] * 1000:+.1f} / "
                f"{quartiles[2] * 1000:+.1f} ms); medians of {setting.ttft_rounds} rounds of one-token calls",
            },
        ]
    return out
