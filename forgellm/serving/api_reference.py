"""The reference API: ``/api/model/{load,unload,status,generate}`` and ``/api/health``.

The web app and the CLI use it (through `forgellm.serving.client`). It has a *current* model,
the one the last load chose; generate uses it unless the request names another.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import psutil
from flask import Blueprint, Response, current_app, jsonify, request

from forgellm import __version__
from forgellm.security.requests import request_roots
from forgellm.serving import generation
from forgellm.serving.registry import ModelRegistry
from forgellm.serving.scheduler import GenerationRequest
from forgellm.serving.schemas import GenerateRequest, LoadRequest, UnloadRequest, parse_body

bp = Blueprint("reference", __name__, url_prefix="/api")

_STARTED = time.time()


def registry() -> ModelRegistry:
    return current_app.extensions["forgellm.registry"]


@bp.get("/health")
def health() -> Response:
    return jsonify(
        {
            "status": "ok",
            "version": __version__,
            "uptime_seconds": round(time.time() - _STARTED, 3),
            "models_loaded": len(registry().cached()),
        }
    )


@bp.post("/model/load")
def load() -> Response:
    body = parse_body(request.get_data(), LoadRequest)
    started = time.perf_counter()
    worker = registry().load(body.model, body.adapter, body.engine, roots=request_roots())
    return jsonify(worker.describe() | {"loaded": True, "seconds": round(time.perf_counter() - started, 6)})


@bp.post("/model/unload")
def unload() -> Response:
    body = parse_body(request.get_data(), UnloadRequest, empty_ok=True)
    unloaded = registry().unload(body.model, everything=body.all)
    return jsonify(
        {
            "unloaded": unloaded,
            "memory_in_use_bytes": registry().status()["memory_in_use_bytes"],
            "process_rss_bytes": _rss(),
        }
    )


@bp.get("/model/status")
def status() -> Response:
    return jsonify(registry().status() | {"process_rss_bytes": _rss()})


@bp.post("/model/generate")
def generate() -> Response:
    body = parse_body(request.get_data(), GenerateRequest)
    worker = (
        registry().load(body.model, body.adapter, make_current=False, roots=request_roots())
        if body.model
        else registry().current()
    )
    run = generation.start(
        worker,
        GenerationRequest(
            prompt=body.prompt_input(),
            params=body.sampling_params(),
            system=body.system,
            fmt=body.format,
            enable_thinking=body.enable_thinking,
        ),
    )
    if body.stream:
        return generation.event_stream(run, _events(run))
    run.collect()
    return jsonify(
        {
            **_identity(run),
            "text": run.text,
            "finish_reason": run.finish_reason,
            "usage": run.usage(),
            "timings": run.timings(),
        }
    )


def _events(run: generation.Generation) -> Iterator[dict[str, Any]]:
    """One ``token`` event per text piece (with running counts), then one ``done`` event."""
    for chunk in run:
        if chunk.text:
            yield {
                "type": "token",
                "text": chunk.text,
                "prompt_tokens": chunk.prompt_tokens,
                "completion_tokens": chunk.completion_tokens,
                "tokens_per_second": chunk.tokens_per_second,
                "elapsed": round(time.perf_counter() - run.job.submitted, 6),
            }
    yield {
        "type": "done",
        **_identity(run),
        "finish_reason": run.finish_reason,
        "usage": run.usage(),
        "timings": run.timings(),
    }


def _identity(run: generation.Generation) -> dict[str, Any]:
    worker = run.worker
    return {
        "model": worker.info.name,
        "adapter": worker.adapter.name if worker.adapter else None,
        "engine": worker.engine.name,
    }


def _rss() -> int:
    return psutil.Process(os.getpid()).memory_info().rss
