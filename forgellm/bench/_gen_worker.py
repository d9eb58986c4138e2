"""Generation contenders of one engine in one process (see `forgellm.bench.generation`).

``forgellm``: the engine's `LoadedModel.generate`, the path ``forgellm generate`` takes;
``server``: a ``forgellm server`` process on loopback, streamed over HTTP (server-sent events);
``raw``: the engine's library alone, as a user would call it: transformers ``model.generate``
with a streamer (torch) or ``mlx_lm.stream_generate`` (mlx). All get the same token ids,
greedy, the same number of new tokens.
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgellm.bench._common import serve

# A contender: (prompt text, prompt ids, new tokens) -> the time of the call and the times at which
# the running count of generated tokens was seen, as [(time, count), ...].
Generate = Callable[[str, list[int], int], tuple[float, list[tuple[float, int]]]]


@dataclass
class State:
    contenders: dict[str, Generate]
    prompt: str
    prompt_ids: list[int]


def setup(spec: dict[str, Any]) -> State:
    from forgellm.engines import get_engine
    from forgellm.engines.base import SamplingParams
    from forgellm.models.resolve import describe

    engine = spec["engine"]
    loaded = get_engine(engine).load(describe(Path(spec["model"])))
    prompt = loaded.format_prompt(spec["prompt"], fmt="chat")
    prompt_ids = loaded.encode(prompt)

    def ours(text: str, ids: list[int], count: int) -> tuple[float, list[tuple[float, int]]]:
        seen = []
        started = time.perf_counter()
        for chunk in loaded.generate(text, SamplingParams(max_tokens=count, temperature=0.0)):
            seen.append((time.perf_counter(), chunk.completion_tokens))
        return started, seen

    raw = _raw_torch(spec["model"]) if engine == "torch" else _raw_mlx(spec["model"])
    state = State({"forgellm": ours, "raw": raw}, prompt, prompt_ids)
    if spec.get("server"):
        state.contenders["server"] = _server(engine, spec["model"])
    return state


def _raw_torch(model_dir: str) -> Generate:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    class Times(BaseStreamer):
        def __init__(self) -> None:
            self.seen: list[tuple[float, int]] = []
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # the first call carries the prompt
                self.prompt_seen = True
                return
            self.seen.append((time.perf_counter(), len(self.seen) + 1))

        def end(self) -> None:
            pass

    def generate(text: str, ids: list[int], count: int) -> tuple[float, list[tuple[float, int]]]:
        streamer = Times()
        started = time.perf_counter()
        input_ids = torch.tensor([ids])
        model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=count,
            do_sample=False,
            streamer=streamer,
            pad_token_id=model.config.eos_token_id,
        )
        return started, streamer.seen

    return generate


def _raw_mlx(model_dir: str) -> Generate:
    import mlx.core as mx
    import mlx_lm

    model, tokenizer = mlx_lm.load(model_dir)
    if mx.default_device() == mx.cpu:
        model.set_dtype(mx.float32)

    def generate(text: str, ids: list[int], count: int) -> tuple[float, list[tuple[float, int]]]:
        seen = []
        started = time.perf_counter()
        for response in mlx_lm.stream_generate(model, tokenizer, ids, max_tokens=count):
            seen.append((time.perf_counter(), response.generation_tokens))
        return started, seen

    return generate


def _server(engine: str, model_dir: str) -> Generate:
    import httpx

    from forgellm.bench.load import _ServerProcess

    os.environ["FORGELLM_ENGINE"] = engine  # the server's default engine
    workspace = tempfile.TemporaryDirectory(prefix="forgellm-bench-server-")
    server = _ServerProcess(Path(workspace.name), roots=(Path(model_dir).parent,)).__enter__()
    http = httpx.Client(base_url=server.url, timeout=httpx.Timeout(30.0, read=None))
    response = http.post("/api/model/load", json={"model": model_dir, "engine": engine})
    if response.status_code != 200:
        raise RuntimeError(f"the server could not load {model_dir}: {response.text[:300]}")

    def generate(text: str, ids: list[int], count: int) -> tuple[float, list[tuple[float, int]]]:
        seen = []
        body = {"prompt": text, "format": "raw", "temperature": 0, "max_tokens": count, "stream": True}
        started = time.perf_counter()
        with http.stream("POST", "/api/model/generate", json=body) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    tokens = event.get("completion_tokens", event.get("usage", {}).get("completion_tokens"))
                    if tokens:
                        seen.append((time.perf_counter(), tokens))
        return started, seen

    def close() -> None:
        http.close()
        server.__exit__()
        workspace.cleanup()

    atexit.register(close)  # the worker's "quit" ends the server too
    return generate


def generate(state: State, command: dict[str, Any]) -> dict[str, Any]:
    started, seen = state.contenders[command["contender"]](state.prompt, state.prompt_ids, int(command["tokens"]))
    if not seen:
        raise RuntimeError(f"{command['contender']} generated nothing")
    return {"started": started, "seen": seen}


if __name__ == "__main__":
    serve({"generate": generate}, setup)
