"""Switching the model server between two loaded models (issue 6: under 100 ms from the cache).

A real ``forgellm server`` loads model A, then model B (both stay in its memory-bounded cache),
then is asked over HTTP to switch A, B, A, ... Each switch is one ``POST /api/model/load``
timed at the client, with a one-token generation after it to check the switched-to model
answers. Baseline, in the same run: the cold load of the same model (what a switch would cost
without the cache). Full run: the embedded model and the tests' tiny llama; quick: two tiny
llamas.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from forgellm.bench._common import embedded_model, tiny_model
from forgellm.bench.load import _ServerProcess


def run(quick: bool) -> list[dict[str, Any]]:
    switches = 6 if quick else 20
    with tempfile.TemporaryDirectory(prefix="forgellm-bench-switch-") as tmp:
        workspace = Path(tmp)
        first = tiny_model(workspace / "tiny-a")
        second = tiny_model(workspace / "tiny-b") if quick else embedded_model()
        with (
            _ServerProcess(workspace, roots=(Path(second).parent,)) as server,
            httpx.Client(base_url=server.url, timeout=600) as http,
        ):
            cold = {model: _load(http, model) for model in (first, second)}
            times = [_load(http, model) for _, model in zip(range(switches), _alternate(first, second))]
            cached = len(http.get("/api/model/status").json()["cache"])
    seconds = statistics.median(times)
    cold_second = cold[second]
    return [
        {
            "name": "server_switch_cached",
            "value": round(seconds * 1000, 1),
            "unit": "ms",
            "baseline": round(cold_second * 1000, 1),
            "ratio": round(seconds / cold_second, 4),
            "notes": f"POST /api/model/load of a model already in the server's cache, median of {len(times)} "
            f"switches between {Path(first).name} and {Path(second).name} (max {max(times) * 1000:.1f} ms); "
            f"baseline: the cold load of {Path(second).name}; target under 100 ms; "
            f"{cached} models cached",
        }
    ]


def _alternate(a: Path, b: Path):
    while True:
        yield a
        yield b


def _load(http: httpx.Client, model: Path) -> float:
    start = time.perf_counter()
    loaded = http.post("/api/model/load", json={"model": str(model)})
    seconds = time.perf_counter() - start
    loaded.raise_for_status()
    answer = http.post("/api/model/generate", json={"prompt": "Hi", "max_tokens": 1, "temperature": 0})
    answer.raise_for_status()
    if answer.json()["model"] != loaded.json()["model"]:
        raise RuntimeError(f"the server answered with {answer.json()['model']} after switching to {model}")
    return seconds
