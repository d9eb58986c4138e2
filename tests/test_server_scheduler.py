"""The scheduler's job protocol, independent of how fast the machine is: a request thread
notices a client that left even while its model streams chunks faster than the poll interval
(on a fast machine the tiny model does; on a loaded one it does not, so the HTTP tests alone
would pass or fail by chance)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from forgellm.engines.base import GenerationChunk, SamplingParams
from forgellm.serving.scheduler import (
    DISCONNECT_POLL_SECONDS,
    FIRST_CHUNK_HANDOVER_SECONDS,
    ClientGone,
    GenerationJob,
    GenerationRequest,
)


class FastModel:
    """A model that streams a chunk every millisecond until closed (a fast GPU, in effect)."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed = threading.Event()

    def format_prompt(self, prompt: str, **_: object) -> str:
        return prompt

    def generate(self, prompt: str, params: SamplingParams) -> Iterator[GenerationChunk]:
        try:
            while True:
                self.produced += 1
                yield GenerationChunk(text="x", prompt_tokens=1, completion_tokens=self.produced)
                time.sleep(0.001)
        finally:
            self.closed.set()


def _run(job: GenerationJob, model: FastModel) -> threading.Thread:
    worker = threading.Thread(target=job.run, args=(model,), daemon=True)
    worker.start()
    return worker


def test_a_client_that_leaves_is_noticed_while_chunks_keep_coming() -> None:
    model = FastModel()
    job = GenerationJob(GenerationRequest(prompt="Hi", params=SamplingParams()))
    worker = _run(job, model)
    gone_at: list[float] = []

    def disconnected() -> bool:
        return bool(gone_at) and time.monotonic() >= gone_at[0]

    chunks = job.stream(disconnected)
    assert next(chunks).text == "x"
    gone_at.append(time.monotonic() + 0.2)
    with pytest.raises(ClientGone):
        for _ in chunks:
            assert time.monotonic() < gone_at[0] + 2, "the request thread never checked its client"
    assert model.closed.wait(5), "the generation went on after its client left"
    worker.join(5)
    produced = model.produced
    time.sleep(0.1)
    assert model.produced == produced


def test_a_client_that_stays_reads_every_chunk_in_order() -> None:
    model = FastModel()
    job = GenerationJob(GenerationRequest(prompt="Hi", params=SamplingParams()))
    _run(job, model)
    chunks = job.stream(lambda: False)
    counts = [next(chunks).completion_tokens for _ in range(int(3 * DISCONNECT_POLL_SECONDS / 0.001))]
    assert counts == list(range(1, len(counts) + 1))
    chunks.close()  # closing the reader cancels the job
    assert model.closed.wait(5)


def test_the_worker_hands_the_first_chunk_over_before_generating_on() -> None:
    """The engine is not resumed after the first chunk until the reader has taken it and asked
    for the next (the engine's next step may hold the GIL and would delay the reader); a reader
    that never asks holds it back only `FIRST_CHUNK_HANDOVER_SECONDS`."""
    model = FastModel()
    job = GenerationJob(GenerationRequest(prompt="Hi", params=SamplingParams()))
    _run(job, model)
    chunks = job.stream(lambda: False)
    assert next(chunks).completion_tokens == 1
    time.sleep(0.1)  # a FastModel left alone makes a chunk every millisecond
    assert model.produced == 1, "the engine went on before the first chunk was handed over"
    assert next(chunks).completion_tokens == 2
    chunks.close()
    assert model.closed.wait(5)


def test_a_reader_that_never_asks_for_more_does_not_stall_the_worker() -> None:
    model = FastModel()
    job = GenerationJob(GenerationRequest(prompt="Hi", params=SamplingParams()))
    worker = _run(job, model)
    assert job.events.get(timeout=5).completion_tokens == 1  # taken, but the next never asked for
    deadline = time.monotonic() + FIRST_CHUNK_HANDOVER_SECONDS + 5
    while model.produced < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert model.produced >= 3, "the worker waited for the reader forever"
    job.cancel()
    worker.join(5)
    assert model.closed.is_set()
