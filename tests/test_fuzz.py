"""Schemathesis against the OpenAPI documents both servers publish at ``/api/openapi.json``.

Every operation gets schema-valid requests (positive) and schema-breaking ones (negative),
a bounded number each; none may get a 5xx, and every error must be the JSON error object.
The web app is fuzzed with a live model server behind it (no model loaded: nothing slow is
generated), so its proxied routes are exercised end to end.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

EXAMPLES_PER_MODE = 20
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_MODE,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz(app: Flask, *, skip: set[str] = frozenset()) -> tuple[int, list[str]]:
    """Run every operation of ``app``'s document; the number of calls and the problems found."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    calls = 0
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if f"{operation.method.upper()} {operation.path}" in skip:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ_SETTINGS
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call()
                problem = _problem(response)
                if problem and len(problems) < 20:
                    problems.append(f"{case.as_curl_command()} -> {response.status_code}: {problem}")

            try:
                run()
            except Unsatisfiable:
                # An operation without inputs has no schema-breaking variant to send.
                assert mode is GenerationMode.NEGATIVE, f"no valid request for {operation.path}"
    return calls, problems


def _problem(response: Any) -> str | None:
    if response.status_code >= 500:
        return response.text[:300]
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return f"error body is not the JSON error object: {response.text[:200]!r}"
        if not isinstance(error.get("message"), str) or "Traceback" in error["message"]:
            return f"bad error object {error!r}"
    return None


@pytest.fixture
def model_server(workspace: Path):
    from forgellm.serving.app import create_app
    from forgellm.serving.main import RunningServer, ServerOptions

    with RunningServer(create_app(), ServerOptions(port=0)) as server:
        yield server


@pytest.mark.slow
def test_model_server_api_never_answers_5xx(model_server):
    calls, problems = fuzz(model_server.app)
    assert calls > 100
    assert problems == []


@pytest.mark.slow
def test_web_api_never_answers_5xx(workspace: Path, model_server):
    from forgellm.web.app import create_app

    app = create_app(
        {
            "WORKSPACE": str(workspace),
            "START_BACKGROUND": False,
            "MODEL_SERVER_URL": model_server.url,
            # Accepted training requests start this instead of minutes of real training.
            "TRAIN_COMMAND": [sys.executable, "-c", "pass"],
        }
    )
    calls, problems = fuzz(app)
    assert calls > 300
    assert problems == []
