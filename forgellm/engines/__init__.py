"""The engines: pick one by name (``auto``, ``mlx``, ``torch``) and load models with it.

Engine modules import their libraries lazily, so choosing or listing engines is cheap and an
engine whose library is missing is reported, not crashed on.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from typing import TYPE_CHECKING

from forgellm.engines.base import Engine, GenerationChunk, LoadedModel, SamplingParams
from forgellm.errors import EngineUnavailableError, UserError

if TYPE_CHECKING:
    from forgellm.workspace import Workspace

__all__ = [
    "ENGINE_NAMES",
    "Engine",
    "GenerationChunk",
    "LoadedModel",
    "SamplingParams",
    "all_engines",
    "get_engine",
    "load_model",
    "resolve_engine_name",
]

ENGINE_NAMES = ("mlx", "torch")
ENGINE_ENV = "FORGELLM_ENGINE"
_MODULES = {"mlx": "forgellm.engines.mlx_engine:MLXEngine", "torch": "forgellm.engines.torch_engine:TorchEngine"}


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def resolve_engine_name(name: str | None = None) -> str:
    """``mlx`` or ``torch`` from a name, ``auto``, or (when None) ``$FORGELLM_ENGINE``.

    ``auto`` is mlx on Apple Silicon and torch elsewhere.
    """
    requested = (name if name is not None else os.environ.get(ENGINE_ENV) or "auto").strip().lower()
    if requested == "auto":
        return "mlx" if is_apple_silicon() else "torch"
    if requested not in ENGINE_NAMES:
        source = f"${ENGINE_ENV}" if name is None else "--engine"
        raise UserError(f"unknown engine {requested!r} (from {source}): use one of auto, {', '.join(ENGINE_NAMES)}")
    return requested


def _engine_instance(name: str) -> Engine:
    module, attr = _MODULES[name].split(":")
    return getattr(importlib.import_module(module), attr)()


def get_engine(name: str | None = None) -> Engine:
    """The engine to use; raises `EngineUnavailableError` (with the install command) if it cannot run here."""
    engine = _engine_instance(resolve_engine_name(name))
    usable, reason = engine.availability()
    if not usable:
        raise EngineUnavailableError(f"the {engine.name} engine is not available: {reason}")
    return engine


def all_engines() -> list[Engine]:
    """Every engine, available or not (for `forgellm info`)."""
    return [_engine_instance(name) for name in ENGINE_NAMES]


def load_model(
    model: str, adapter: str | None = None, engine: str | None = None, *, workspace: Workspace | None = None
) -> LoadedModel:
    """Resolve a model (and adapter) by name and load it with an engine.

    Given an adapter folder as the model, its base model is loaded with it as the adapter.
    """
    from forgellm.models.resolve import resolve_pair

    info, adapter_info = resolve_pair(model, adapter, workspace)
    return get_engine(engine).load(info, adapter_info)
