"""Who generates when: one worker thread per loaded model, serving its queue of jobs in order.

A `ModelWorker` owns one `LoadedModel` for its whole life: it loads it, runs the generation
jobs queued for it one at a time (so answers never interleave and greedy answers match a
sequential run), and frees it when closed. Owning the model on one thread also suits MLX,
whose streams belong to the thread that made them. Closing a worker lets the jobs already
queued finish first, so an unload or an eviction never cuts an answer short; jobs submitted
after that are refused with a `ConflictError`.

A request thread talks to its job through a queue of events and may cancel it at any time
(its client went away): the worker then closes the engine's token iterator, which stops the
generation at the next token.

The worker hands the first chunk over before it asks the engine for more: it waits (without
the GIL) until the request thread has written that chunk out and asked for the next one. The
engine's next step may run C code that holds the GIL: mlx-lm clears MLX's buffer cache right
after the first token while the second is computed, which blocked the request thread for
20-45 ms and put that on every answer's time to first token. Later tokens are not waited for,
so a slow client never slows the generation.
"""

from __future__ import annotations

import gc
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from forgellm.engines.base import Engine, GenerationChunk, LoadedModel, Message, PromptFormat, SamplingParams
from forgellm.errors import ConflictError, ForgeError
from forgellm.models.resolve import ModelInfo
from forgellm.serving.memory import generation_failure, is_out_of_memory, load_failure

log = logging.getLogger(__name__)

# How often a waiting request thread checks whether its client is still connected.
DISCONNECT_POLL_SECONDS = 0.05
# Longest the worker waits for the request thread to take the first chunk before it goes on.
FIRST_CHUNK_HANDOVER_SECONDS = 1.0


class ClientGone(Exception):
    """The client of a job disconnected; nothing more will be read."""


@dataclass
class GenerationRequest:
    """What to generate: the prompt before formatting, how to format it and how to sample."""

    prompt: str | Sequence[Message]
    params: SamplingParams
    system: str | None = None
    fmt: PromptFormat | None = None
    enable_thinking: bool = False  # read by templates that know it (Qwen 3); others never see it


_END = object()


@dataclass
class GenerationJob:
    """One queued generation. The worker puts chunks (or an error) on ``events``; the request
    thread reads them with `stream` and cancels the job if its client leaves."""

    request: GenerationRequest
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None  # when the worker took the job (submitted..started is queue time)
    events: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Set when the request thread asks for the chunk after the first (or cancels the job).
    first_taken: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()
        self.first_taken.set()

    @property
    def queue_seconds(self) -> float:
        return (self.started or time.perf_counter()) - self.submitted

    def run(self, model: LoadedModel) -> None:
        """On the worker thread: format, generate, forward each chunk; stop early when cancelled."""
        self.started = time.perf_counter()
        try:
            if self.cancelled.is_set():
                return
            req = self.request
            prompt = model.format_prompt(
                req.prompt, system=req.system, fmt=req.fmt, enable_thinking=req.enable_thinking
            )
            chunks = model.generate(prompt, req.params)
            try:
                for chunk in chunks:
                    self.events.put(chunk)
                    if not self.first_taken.is_set():
                        self.first_taken.wait(FIRST_CHUNK_HANDOVER_SECONDS)  # see the module docstring
                    if self.cancelled.is_set():
                        log.info("generation cancelled after %d tokens: the client went away", chunk.completion_tokens)
                        break
            finally:
                chunks.close()  # stops the engine's token loop when we leave early
        except ForgeError as exc:
            self.events.put(exc)
        except Exception as exc:  # a bug or an engine failure: the request fails, the worker lives on
            if is_out_of_memory(exc):
                log.warning("generation ran out of memory: %s", exc)
                self.events.put(generation_failure(exc, model.info.name))
            else:
                log.exception("generation failed")
                self.events.put(exc)
        finally:
            self.events.put(_END)

    def stream(self, disconnected: Callable[[], bool] = lambda: False) -> Generator[GenerationChunk, None, None]:
        """On the request thread: the chunks as they come. Raises the job's error, or `ClientGone`
        when ``disconnected()`` turns true. Closing this iterator cancels the job.

        The client is checked every `DISCONNECT_POLL_SECONDS` by the clock, not only when no
        chunk came in that time: a fast model keeps the queue busy, and a check made only on
        an empty queue would never run while it generates for a client that is long gone."""
        next_check = time.monotonic() + DISCONNECT_POLL_SECONDS
        try:
            while True:
                try:
                    item = self.events.get(timeout=DISCONNECT_POLL_SECONDS)
                except queue.Empty:
                    item = None
                if time.monotonic() >= next_check:
                    if disconnected():
                        raise ClientGone()
                    next_check = time.monotonic() + DISCONNECT_POLL_SECONDS
                if item is None:
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                self.first_taken.set()  # the reader wants the next chunk: the previous one is out
        finally:
            self.cancel()


class ModelWorker:
    """A loaded model and the thread that serves it. Start it with `start`, wait with `wait_ready`."""

    _ids = itertools.count(1)

    def __init__(self, *, name: str, engine: Engine, info: ModelInfo, adapter: ModelInfo | None, estimated_bytes: int):
        self.name = name  # the id clients use (OpenAI `model`)
        self.engine = engine
        self.info = info
        self.adapter = adapter
        self.estimated_bytes = estimated_bytes
        self.model: LoadedModel | None = None
        self.load_seconds: float | None = None
        self.loaded_at: float | None = None
        self.last_used = time.time()
        self.error: BaseException | None = None
        self._memory_bytes: int | None = None
        self._jobs: queue.Queue[GenerationJob | None] = queue.Queue()
        self._running: GenerationJob | None = None
        self._closing = False
        self._lock = threading.Lock()  # guards _closing against a racing submit
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"model-{next(self._ids)}")

    # -------------------------------------------------------------- lifecycle

    def start(self) -> ModelWorker:
        self._thread.start()
        return self

    def wait_ready(self) -> ModelWorker:
        """Block until the model is loaded; re-raise the load error if it failed."""
        self._ready.wait()
        if self.error is not None:
            raise self.error
        return self

    def close(self, *, wait: bool = False, timeout: float | None = None) -> None:
        """Free the model once the jobs already queued are done; new jobs are refused from now on."""
        with self._lock:
            if not self._closing:
                self._closing = True
                self._jobs.put(None)
        if wait:
            self._closed.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self.model = self.engine.load(self.info, self.adapter)
            self._memory_bytes = self.model.memory_bytes()
            self.load_seconds = time.perf_counter() - started
            self.loaded_at = time.time()
            log.info("loaded %s in %.2f s (%.0f MB)", self.name, self.load_seconds, self._memory_bytes / 1e6)
        except BaseException as exc:  # reported to every waiter by wait_ready
            if is_out_of_memory(exc):
                log.warning("not enough memory to load %s: %s", self.name, exc)
                exc = load_failure(exc, self.name, self.estimated_bytes)
            self.error = exc
            self.model = None
            gc.collect()  # whatever the failed load allocated goes now
            self._closing = True
            self._ready.set()
            self._closed.set()
            return
        self._ready.set()
        try:
            while (job := self._jobs.get()) is not None:
                self._running = job
                job.run(self.model)
                self._running = None
                self.last_used = time.time()
        finally:
            self._release()

    def _release(self) -> None:
        model, self.model = self.model, None
        if model is not None:
            model.close()
        del model
        gc.collect()  # the weights go now, not at some later collection
        self._memory_bytes = 0
        self._closed.set()
        log.info("unloaded %s", self.name)

    # -------------------------------------------------------------- jobs

    def submit(self, request: GenerationRequest) -> GenerationJob:
        job = GenerationJob(request)
        with self._lock:
            if self._closing:
                raise ConflictError(f"model {self.name} was unloaded while the request waited: load it again")
            self._jobs.put(job)
        self.last_used = time.time()
        return job

    # -------------------------------------------------------------- state

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.error is None and not self._closed.is_set()

    @property
    def memory_bytes(self) -> int:
        """Measured once loaded; the estimate from the files before."""
        return self._memory_bytes if self._memory_bytes is not None else self.estimated_bytes

    @property
    def busy(self) -> bool:
        return self._running is not None

    @property
    def queue_length(self) -> int:
        """Jobs waiting behind the running one."""
        return max(0, self._jobs.qsize() - (1 if self._closing and not self._closed.is_set() else 0))

    @property
    def state(self) -> str:
        if self._closed.is_set():
            return "unloaded"
        if self._closing:
            return "unloading"
        return "ready" if self._ready.is_set() else "loading"

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "model": self.info.name,
            "model_path": str(self.info.path),
            "adapter": self.adapter.name if self.adapter else None,
            "adapter_path": str(self.adapter.path) if self.adapter else None,
            "engine": self.engine.name,
            "type": "instruct" if self.info.is_instruct else "base",
            "state": self.state,
            "memory_bytes": self.memory_bytes,
            "load_seconds": self.load_seconds,
            "loaded_at": self.loaded_at,
            "busy": self.busy,
            "queue_length": self.queue_length,
        }
