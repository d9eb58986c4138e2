"""What the training and generation benchmarks share: the models and data they run on,
and the line protocol of their worker processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TINY_BUILDER = Path(__file__).resolve().parents[2] / "tests" / "tiny_model.py"


def embedded_model() -> Path:
    """The embedded model's folder (what ``default`` resolves to)."""
    from forgellm.models.resolve import resolve

    return resolve("default").path


def tiny_model(out: Path) -> Path:
    """The tests' tiny random llama (its builder lives with the tests, in the source checkout)."""
    if not TINY_BUILDER.exists():
        raise RuntimeError(f"quick benchmarks need {TINY_BUILDER} (run them from a ForgeLLM source checkout)")
    spec = importlib.util.spec_from_file_location("forgellm_tiny_model", TINY_BUILDER)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build_tiny_llama(out)


def sample_sequences(workspace: Path, model_dir: Path, seq_length: int) -> tuple[np.ndarray, np.ndarray]:
    """The sample CPT documents packed into ``seq_length``-token sequences by the data pipeline."""
    from transformers import AutoTokenizer

    from forgellm.data.pipeline import prepare_dataset
    from forgellm.data.sample.generator import write_sample
    from forgellm.data.settings import DataSettings

    write_sample(workspace / "dataset" / "sample")
    settings = DataSettings(
        input_dir=workspace / "dataset" / "sample" / "cpt",
        training_type="cpt",
        max_seq_length=seq_length,
        validation_split=0.1,
        data_mixture_ratio=1.0,
    )
    prepared = prepare_dataset(settings, AutoTokenizer.from_pretrained(str(model_dir)), workspace)
    full = prepared.train.mask[:, 1:].all(axis=1)  # packed: only the last sequence may hold padding
    return np.asarray(prepared.train.tokens[full]), np.asarray(prepared.train.mask[full])


def suite_results(path: Path, module: str) -> list[dict[str, Any]]:
    """One suite's rows in the output of ``forgellm bench --json`` (for the tables the suites print)."""
    data = json.loads(path.read_text())
    for suite in data.get("suites", []):
        if suite.get("module") == module and suite.get("results"):
            return suite["results"]
    raise SystemExit(f"{path} has no results of the {module} benchmark (forgellm bench --only {module} --json)")


class Worker:
    """A benchmark worker process that answers one JSON line per JSON command line.

    Each contender lives in its own process, so its peak memory is its own and the engines'
    thread pools do not meet; the parent interleaves the commands it sends to them.
    """

    def __init__(self, module: str, spec: dict[str, Any], env: dict[str, str] | None = None):
        self._log = tempfile.TemporaryFile(mode="w+")  # a pipe nobody reads could fill up and block it
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.ready = self.call(spec)

    def call(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=30)
            self._log.seek(0)
            raise RuntimeError(f"benchmark worker {command.get('contender', '')} died: {self._log.read()[-3000:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"benchmark worker failed: {answer['error']}")
        return answer

    def close(self) -> dict[str, Any]:
        """Ask for the final figures (peak memory) and wait for the process to end."""
        try:
            return self.call({"command": "quit"})
        finally:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


def serve(handlers: dict[str, Any], setup: Any) -> None:
    """The worker side of `Worker`: the first line is the spec given to ``setup`` (which returns the
    state); then each line ``{"command": NAME, ...}`` is answered by ``handlers[NAME](state, command)``,
    except ``peak_rss`` (the process's peak resident memory so far) and ``quit`` (the same, then end)."""
    import resource
    import traceback

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to the log, not into the replies

    def answer(payload: dict[str, Any]) -> None:
        replies.write(json.dumps(payload) + "\n")
        replies.flush()

    state = None
    for number, line in enumerate(sys.stdin):
        try:
            command = json.loads(line)
            if number == 0:
                state = setup(command)
                answer({"ok": True})
            elif command["command"] in ("peak_rss", "quit"):
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
                answer({"peak_rss_bytes": peak})
                if command["command"] == "quit":
                    return
            else:
                answer(handlers[command["command"]](state, command))
        except Exception as exc:  # reported to the parent, which raises it there
            answer({"error": f"{exc!r}\n{traceback.format_exc()}"})
            if number == 0:
                return
