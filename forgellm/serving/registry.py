"""The model cache: loaded models in least-recently-used order, bounded by a memory budget.

Asking for a model that is cached makes it the most recent and costs nothing; asking for a
new one loads it (once, however many requests ask at the same time) after evicting the
least recently used models until the estimated total fits the budget. The reference API's
"current model" is one entry of this cache.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import psutil

from forgellm.access import Roots
from forgellm.engines import get_engine, resolve_engine_name
from forgellm.errors import ConflictError, NotFoundError
from forgellm.models.resolve import ModelInfo, resolve_pair
from forgellm.serving.loaded_state import LoadedModel, LoadedState
from forgellm.serving.scheduler import ModelWorker
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

DEFAULT_BUDGET_SHARE = 0.5  # of the machine's RAM, when no budget is given
GB = 1024**3


def default_memory_budget() -> int:
    return int(psutil.virtual_memory().total * DEFAULT_BUDGET_SHARE)


@dataclass(frozen=True)
class CacheKey:
    engine: str
    model_path: str
    adapter_path: str | None


class ModelRegistry:
    """Thread-safe cache of `ModelWorker`s keyed by (engine, model folder, adapter folder)."""

    def __init__(
        self,
        *,
        memory_budget_bytes: int | None = None,
        engine: str | None = None,
        workspace: Workspace | None = None,
        state: LoadedState | None = None,
    ):
        self.memory_budget_bytes = memory_budget_bytes or default_memory_budget()
        self.default_engine = resolve_engine_name(engine)
        self.workspace = workspace
        self.state = state  # where the current model is recorded, to be loaded again after a restart
        self._lock = threading.Lock()
        self._workers: OrderedDict[CacheKey, ModelWorker] = OrderedDict()  # least recent first
        self._current: CacheKey | None = None

    # -------------------------------------------------------------- getting models

    def load(
        self,
        model: str,
        adapter: str | None = None,
        engine: str | None = None,
        *,
        make_current: bool = True,
        wait: bool = True,
        roots: Roots | None = None,
    ) -> ModelWorker:
        """The worker serving ``model`` (+ ``adapter``), loading it if it is not cached.

        ``wait=False`` returns at once: the model loads in the background (a request for it, or for
        the current model, waits until it is ready) and a failed load is logged and forgotten.
        ``roots``: the names came in a request, so the folders must lie inside them
        (`forgellm.access`); without, as for ``forgellm server --model``, any path loads.
        """
        engine_name = resolve_engine_name(engine or self.default_engine)
        info, adapter_info = self._resolve(model, adapter, roots)
        key = CacheKey(engine_name, str(info.path), str(adapter_info.path) if adapter_info else None)
        with self._lock:
            previous = self._current  # stays current if this load fails
            worker = self._workers.get(key)
            if worker is not None and worker.error is None and not worker.closed:
                self._workers.move_to_end(key)
                evicted: list[ModelWorker] = []
            else:
                estimate = info.size_bytes + (adapter_info.size_bytes if adapter_info else 0)
                if estimate > self.memory_budget_bytes:
                    raise ConflictError(
                        f"model {info.name} needs about {estimate / GB:.2f} GB, more than the memory budget of "
                        f"{self.memory_budget_bytes / GB:.2f} GB: restart the server with a larger --memory-budget"
                    )
                evicted = self._evict_for(estimate)
                name = adapter_info.name if adapter_info else info.name
                worker = ModelWorker(
                    name=name, engine=get_engine(engine_name), info=info, adapter=adapter_info, estimated_bytes=estimate
                ).start()
                self._workers[key] = worker
            if make_current:
                self._current = key
        for old in evicted:
            log.info("evicting %s to fit %s in the memory budget", old.name, worker.name)
            old.close()
        if not wait:
            threading.Thread(
                target=self._settle_quietly,
                args=(key, worker, previous, make_current),
                daemon=True,
                name=f"load {worker.name}",
            ).start()
            return worker
        return self._settle(key, worker, previous, make_current)

    def _settle(self, key: CacheKey, worker: ModelWorker, previous: CacheKey | None, make_current: bool) -> ModelWorker:
        """Wait for ``worker`` to load; on failure forget it (and restore the previous current model)."""
        try:
            worker.wait_ready()
        except BaseException:
            with self._lock:
                if self._workers.get(key) is worker:
                    del self._workers[key]
                    if self._current == key:
                        self._current = previous if previous in self._workers else None
            raise
        if make_current and self.state is not None:
            self.state.record(LoadedModel(key.model_path, key.adapter_path, key.engine))
        return worker

    def _settle_quietly(
        self, key: CacheKey, worker: ModelWorker, previous: CacheKey | None, make_current: bool
    ) -> None:
        try:
            self._settle(key, worker, previous, make_current)
            log.info("loaded %s (%s) in %.1f s", worker.name, worker.engine.name, worker.load_seconds or 0.0)
        except Exception as exc:
            log.warning("loading %s failed: %s", worker.name, exc)

    def restore(self) -> ModelWorker | None:
        """Start loading the model `state` recorded (in the background), or None when there is none.

        The record is removed until the load succeeds, so a model whose loading kills the process
        is not tried again at the next start.
        """
        if self.state is None or (saved := self.state.read()) is None:
            return None
        self.state.clear()
        return self.load(saved.model, saved.adapter, saved.engine, wait=False)

    def get(self, name: str, *, roots: Roots | None = None) -> ModelWorker:
        """A model by the id clients use: a cached model's id, else any model or adapter that resolves
        (inside ``roots``, for a request)."""
        with self._lock:
            for key, worker in reversed(self._workers.items()):
                if worker.name == name and worker.error is None and not worker.closed:
                    self._workers.move_to_end(key)
                    break
            else:
                worker = None
        if worker is not None:
            return worker.wait_ready()
        return self.load(name, make_current=False, roots=roots)

    def current(self) -> ModelWorker:
        """The reference API's model; `ConflictError` when none is loaded."""
        with self._lock:
            worker = self._workers.get(self._current) if self._current else None
        if worker is None:
            raise ConflictError(
                "no model is loaded: load one first with POST /api/model/load "
                "{\"model\": \"default\"} (or `forgellm server --model default`)"
            )
        return worker.wait_ready()

    # -------------------------------------------------------------- unloading

    def unload(
        self, name: str | None = None, *, everything: bool = False, wait: bool = True, forget: bool = True
    ) -> list[str]:
        """Unload one model (by id; default the current one) or all; returns the ids unloaded.

        Jobs already queued on a model finish first; ``wait`` blocks until its memory is freed.
        ``forget=False`` keeps the `state` record (the server shuts down; it did not unload on request).
        """
        with self._lock:
            if everything:
                keys = list(self._workers)
            elif name is None:
                if self._current is None:
                    raise ConflictError("no model is loaded, so there is nothing to unload")
                keys = [self._current]
            else:
                keys = [k for k, w in self._workers.items() if w.name == name]
                if not keys:
                    loaded = ", ".join(w.name for w in self._workers.values()) or "none"
                    raise NotFoundError(f"model {name!r} is not loaded (loaded: {loaded})")
            workers = [self._workers.pop(k) for k in keys]
            if self._current in keys:
                self._current = None
                if self.state is not None and forget:
                    self.state.clear()  # unloaded on purpose: nothing to load again after a restart
        for worker in workers:
            worker.close(wait=wait)
        return [w.name for w in workers]

    def close(self) -> None:
        self.unload(everything=True, wait=True, forget=False)

    def _evict_for(self, incoming_bytes: int) -> list[ModelWorker]:
        """Under the lock: remove least recently used workers until ``incoming_bytes`` fits."""
        evicted = []
        while self._workers and self._in_use_bytes() + incoming_bytes > self.memory_budget_bytes:
            key, worker = self._workers.popitem(last=False)
            if self._current == key:
                self._current = None
            evicted.append(worker)
        return evicted

    def _in_use_bytes(self) -> int:
        return sum(w.memory_bytes for w in self._workers.values())

    # -------------------------------------------------------------- state

    def status(self) -> dict[str, Any]:
        with self._lock:
            current = self._workers.get(self._current) if self._current else None
            cached = [w.describe() | {"current": w is current} for w in reversed(self._workers.values())]
            in_use = self._in_use_bytes()
        head = current.describe() if current is not None else {}
        return {
            "loaded": current is not None and current.ready,
            **{
                k: head.get(k)
                for k in (
                    "model",
                    "adapter",
                    "engine",
                    "type",
                    "state",
                    "memory_bytes",
                    "load_seconds",
                    "busy",
                    "queue_length",
                )
            },
            "default_engine": self.default_engine,
            "memory_in_use_bytes": in_use,
            "memory_budget_bytes": self.memory_budget_bytes,
            "cache": cached,  # most recently used first
        }

    def cached(self) -> list[ModelWorker]:
        with self._lock:
            return list(reversed(self._workers.values()))

    # -------------------------------------------------------------- resolution

    def _resolve(self, model: str, adapter: str | None, roots: Roots | None) -> tuple[ModelInfo, ModelInfo | None]:
        try:
            return resolve_pair(
                model, adapter, self.workspace, model_arg="`model`", adapter_arg="`adapter`", roots=roots
            )
        except (OSError, ValueError) as exc:  # a name the file system refuses (too long, NUL byte)
            raise NotFoundError(
                f"model {model!r} (adapter {adapter!r}) cannot be looked up ({type(exc).__name__})", field="model"
            ) from None
