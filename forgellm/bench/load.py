"""Bounded load test of the model server: many concurrent clients on loopback, for a fixed time.

A ``forgellm server`` process is started on a free loopback port with a tiny random llama
(built into a temporary workspace), then N clients alternate status and greedy generate
requests until the time is up. Every generate answer is compared with the answer the same
prompt got when the server was idle (greedy, so it must be identical). Reported: failed
requests, wrong answers, throughput, and p50/p99 latencies beside the idle (one client)
latencies measured in the same run. The server is stopped by its pid at the end.

A second phase measures what a person watching the server sees while it is saturated:
``GENERATING_CLIENTS`` clients each send chat completions back to back (more than the
server's threads), while one prober asks ``/api/health`` and ``/api/model/status`` every
0.1 s. Reported: the probes' p50, p99 and max beside the idle latency.

Full run: 50 clients for 60 s, then 20 generating clients for 20 s. Quick run: 10 clients for
5 s, then 20 generating clients for 5 s.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from forgellm.bench._common import tiny_model

log = logging.getLogger(__name__)

PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "Water boils at",
    "The three primary colours are",
    "In 1969, the first person to walk on the Moon",
]
MAX_TOKENS = 8
GENERATING_CLIENTS = 20
CHAT_MAX_TOKENS = 64
PROBE_INTERVAL_S = 0.1
STARTUP_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 120.0


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"status": [], "generate": []})
    failed: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, seconds: float, problem: str | None = None, wrong: str | None = None) -> None:
        with self.lock:
            self.latencies[kind].append(seconds)
            if problem:
                self.failed.append(problem)
            if wrong:
                self.wrong.append(wrong)


def run(quick: bool) -> list[dict[str, Any]]:
    clients, duration = (10, 5.0) if quick else (50, 60.0)
    return load_test(clients=clients, duration_s=duration, probe_s=5.0 if quick else 20.0)


def load_test(*, clients: int, duration_s: float, probe_s: float = 0.0) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="forgellm-load-") as tmp:
        workspace = Path(tmp)
        tiny_model(workspace / "models" / "base" / "tiny-llama")
        with _ServerProcess(workspace) as server:
            with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as http:
                _ok(http.post("/api/model/load", json={"model": "tiny-llama"}))
                idle = Tally()
                reference = {prompt: _generate(http, prompt, idle) for prompt in PROMPTS}
                for _ in range(10):
                    _timed_status(http, idle)
            tally = Tally()
            deadline = time.monotonic() + duration_s
            threads = [
                threading.Thread(target=_client, args=(server.url, i, deadline, reference, tally), daemon=True)
                for i in range(clients)
            ]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=duration_s + REQUEST_TIMEOUT_S)
            elapsed = time.monotonic() - started
            if any(thread.is_alive() for thread in threads):
                tally.failed.append("a client was still waiting after the request timeout")
            probes = status_under_generation(server.url, duration_s=probe_s) if probe_s else []
    return _results(tally, idle, clients=clients, elapsed=elapsed) + probes


def status_under_generation(url: str, *, duration_s: float, clients: int = GENERATING_CLIENTS) -> list[dict[str, Any]]:
    """Health and status latency while ``clients`` clients keep chat completions running."""
    idle = Tally()
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as http:
        for _ in range(10):
            _timed_probe(http, idle)
    tally = Tally()
    completions = [0]
    deadline = time.monotonic() + duration_s

    def chat() -> None:
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as http:
            while time.monotonic() < deadline:
                response = http.post(
                    "/v1/chat/completions",
                    json={
                        "model": "tiny-llama",
                        "max_tokens": CHAT_MAX_TOKENS,
                        "temperature": 0,
                        "messages": [{"role": "user", "content": PROMPTS[completions[0] % len(PROMPTS)]}],
                    },
                )
                if response.status_code != 200:
                    tally.failed.append(f"chat completion answered {response.status_code}: {response.text[:200]}")
                completions[0] += 1

    threads = [threading.Thread(target=chat, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(min(1.0, duration_s / 4))  # let every generating client get its request in first
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as http:
        while time.monotonic() < deadline:
            _timed_probe(http, tally)
            time.sleep(PROBE_INTERVAL_S)
    for thread in threads:
        thread.join(timeout=REQUEST_TIMEOUT_S)
    probes = tally.latencies["status"]
    alone = _percentile(idle.latencies["status"], 50) * 1000
    setting = (
        f"{len(probes)} GET /api/health and /api/model/status, one every {PROBE_INTERVAL_S} s, while "
        f"{clients} clients kept chat completions of {CHAT_MAX_TOKENS} tokens running "
        f"({completions[0]} done in {duration_s:.0f} s), tiny llama; baseline: idle p50"
    )
    out = []
    for label, value in (("p50", _percentile(probes, 50)), ("p99", _percentile(probes, 99)), ("max", max(probes))):
        ms = value * 1000
        out.append(
            {
                "name": f"load_status_while_generating_{label}",
                "value": round(ms, 2),
                "unit": "ms",
                "baseline": round(alone, 2),
                "ratio": round(ms / alone, 2) if alone else None,
                "notes": setting + (f"; {len(tally.failed)} failed, first: {tally.failed[0]}" if tally.failed else ""),
            }
        )
    return out


def _timed_probe(http: httpx.Client, tally: Tally) -> None:
    for path in ("/api/health", "/api/model/status"):
        start = time.perf_counter()
        response = http.get(path)
        seconds = time.perf_counter() - start
        tally.record(
            "status", seconds, None if response.status_code == 200 else f"{path} answered {response.status_code}"
        )


def _client(url: str, index: int, deadline: float, reference: dict[str, str], tally: Tally) -> None:
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as http:
        turn = index
        while time.monotonic() < deadline:
            try:
                if turn % 2:
                    _timed_status(http, tally)
                else:
                    prompt = PROMPTS[(turn // 2) % len(PROMPTS)]
                    _generate(http, prompt, tally, expected=reference[prompt])
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                tally.record("generate" if turn % 2 == 0 else "status", 0.0, problem=f"{type(exc).__name__}: {exc}")
            turn += 1


def _timed_status(http: httpx.Client, tally: Tally) -> None:
    start = time.perf_counter()
    response = http.get("/api/model/status")
    seconds = time.perf_counter() - start
    problem = (
        None
        if response.status_code == 200 and "memory_in_use_bytes" in response.json()
        else f"status answered {response.status_code}: {response.text[:200]}"
    )
    tally.record("status", seconds, problem)


def _generate(http: httpx.Client, prompt: str, tally: Tally, expected: str | None = None) -> str:
    start = time.perf_counter()
    response = http.post(
        "/api/model/generate", json={"prompt": prompt, "format": "raw", "temperature": 0, "max_tokens": MAX_TOKENS}
    )
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        tally.record("generate", seconds, problem=f"generate answered {response.status_code}: {response.text[:200]}")
        return ""
    text = response.json()["text"]
    wrong = None if expected is None or text == expected else f"{prompt!r}: got {text!r}, expected {expected!r}"
    tally.record("generate", seconds, wrong=wrong)
    return text


def _ok(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:300]}"
        )


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _results(tally: Tally, idle: Tally, *, clients: int, elapsed: float) -> list[dict[str, Any]]:
    total = sum(len(v) for v in tally.latencies.values())
    setting = f"{clients} clients for {elapsed:.0f} s on loopback, tiny llama, greedy, {MAX_TOKENS} new tokens"
    out: list[dict[str, Any]] = [
        {
            "name": "load_failed_requests",
            "value": float(len(tally.failed)),
            "unit": "requests",
            "baseline": None,
            "ratio": None,
            "notes": f"of {total}; {setting}" + (f"; first: {tally.failed[0]}" if tally.failed else ""),
        },
        {
            "name": "load_wrong_answers",
            "value": float(len(tally.wrong)),
            "unit": "answers",
            "baseline": None,
            "ratio": None,
            "notes": "greedy answers differing from the idle server's"
            + (f"; first: {tally.wrong[0]}" if tally.wrong else ""),
        },
        {
            "name": "load_throughput",
            "value": round(total / elapsed, 2),
            "unit": "requests/s",
            "baseline": None,
            "ratio": None,
            "notes": setting,
        },
    ]
    for kind in ("status", "generate"):
        for q in (50, 99):
            loaded = _percentile(tally.latencies[kind], q) * 1000
            alone = _percentile(idle.latencies[kind], q) * 1000
            out.append(
                {
                    "name": f"load_{kind}_p{q}",
                    "value": round(loaded, 2),
                    "unit": "ms",
                    "baseline": round(alone, 2),
                    "ratio": round(loaded / alone, 2) if alone else None,
                    "notes": f"{len(tally.latencies[kind])} requests under load; baseline: one client, idle server",
                }
            )
    if tally.failed or tally.wrong:
        log.error("load test: %d failed requests, %d wrong answers", len(tally.failed), len(tally.wrong))
    return out


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _ServerProcess:
    """``forgellm server`` on a free loopback port, in its own workspace; stopped by its pid.

    ``roots``: folders outside the workspace that requests may load models from (FORGELLM_ROOTS,
    as a user lists their own model folders)."""

    def __init__(self, workspace: Path, *, roots: tuple[Path, ...] = ()):
        self.port = _free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "FORGELLM_HOME": str(workspace)}
        env.pop("FORGELLM_TOKEN", None)
        if roots:
            env["FORGELLM_ROOTS"] = os.pathsep.join(str(Path(root).resolve()) for root in roots)
        self.log_path = workspace / "server.out"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "forgellm", "server", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=workspace,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> _ServerProcess:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"the model server did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
