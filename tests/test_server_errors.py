"""Bad input, access control and faults on a real model server: every refusal is a 4xx with the
JSON error object naming the problem, and the server keeps serving after each."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import openai
import pytest

from forgellm.serving.app import create_app
from forgellm.serving.main import RunningServer, ServerOptions
from tests.cli_helpers import forgellm_error
from tests.server_helpers import http, server  # noqa: F401 (fixtures)

LIMIT = 256 * 1024  # the test server's body limit (tests/server_helpers.py)


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and isinstance(error["type"], str)
    return error


@pytest.mark.parametrize("path", ["/api/model/generate", "/v1/chat/completions", "/v1/completions"])
def test_malformed_json_and_bad_fields_are_400_naming_the_field(
    http: httpx.Client,
    path: str,  # noqa: F811
    tiny_model_dir: Path,
) -> None:
    headers = {"Content-Type": "application/json"}
    assert "not valid JSON" in _error(http.post(path, content=b'{"prompt": ', headers=headers), 400)["message"]
    assert "JSON object" in _error(http.post(path, content=b"[1, 2]", headers=headers), 400)["message"]
    assert "empty" in _error(http.post(path, content=b"", headers=headers), 400)["message"]
    model = str(tiny_model_dir)
    good = {
        "/api/model/generate": {"prompt": "Hi", "model": model},
        "/v1/chat/completions": {"model": model, "messages": [{"role": "user", "content": "Hi"}]},
        "/v1/completions": {"model": model, "prompt": "Hi"},
    }[path]
    for field, value in [
        ("max_tokens", "5"),
        ("max_tokens", 0),
        ("max_tokens", 10**9),
        ("temperature", -1),
        ("top_p", 0),
        ("seed", -3),
        ("seed", True),
        ("stop", [""]),
        ("stream", "yes"),
    ]:
        error = _error(http.post(path, json={**good, field: value}), 400)
        assert error["param"] == field and field in error["message"], (field, value, error)
    required = "prompt" if path == "/v1/completions" else "model" if path.startswith("/v1") else None
    if required:
        error = _error(http.post(path, json={k: v for k, v in good.items() if k != required}), 400)
        assert error["param"] == required and "required" in error["message"]
    assert http.get("/api/health").json()["status"] == "ok"


def test_reference_api_refuses_unknown_fields_and_ambiguous_prompts(http: httpx.Client) -> None:  # noqa: F811
    assert _error(http.post("/api/model/generate", json={"prompt": "Hi", "max_tokns": 5}), 400)["param"] == "max_tokns"
    both = _error(
        http.post("/api/model/generate", json={"prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}]}), 400
    )
    assert "exactly one of `prompt`" in both["message"]
    assert _error(http.post("/api/model/load", json={"model": "m", "engine": "tpu"}), 400)["param"] == "engine"
    bad_role = _error(http.post("/api/model/generate", json={"messages": [{"role": "robot", "content": "Hi"}]}), 400)
    assert bad_role["param"] == "messages.0.role"


def test_unknown_model_is_404_and_nothing_loaded_is_409(http: httpx.Client) -> None:  # noqa: F811
    http.post("/api/model/unload", json={"all": True}).raise_for_status()
    assert "no-such-model" in _error(http.post("/api/model/load", json={"model": "no-such-model"}), 404)["message"]
    assert (
        "no-such-model"
        in _error(
            http.post(
                "/v1/chat/completions", json={"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}
            ),
            404,
        )["message"]
    )
    assert "POST /api/model/load" in _error(http.post("/api/model/generate", json={"prompt": "Hi"}), 409)["message"]
    assert _error(http.get("/api/no/such/route"), 404)["type"] == "not_found_error"
    assert _error(http.get("/api/model/generate"), 405)
    assert http.get("/api/health").json()["status"] == "ok"


@pytest.mark.parametrize("path", ["/api/model/generate", "/v1/chat/completions", "/api/model/load"])
def test_oversized_body_is_413_and_the_server_goes_on(http: httpx.Client, path: str) -> None:  # noqa: F811
    big = b'{"prompt": "' + b"x" * (LIMIT + 10) + b'"}'
    assert "limit" in _error(http.post(path, content=big, headers={"Content-Type": "application/json"}), 413)["message"]

    def chunked():  # no Content-Length: the limit holds for streamed bodies too
        yield b'{"prompt": "'
        for _ in range(LIMIT // 1024 + 2):
            yield b"x" * 1024
        yield b'"}'

    _error(http.post(path, content=chunked(), headers={"Content-Type": "application/json"}), 413)
    assert http.get("/api/health").json()["status"] == "ok"


def test_off_loopback_the_server_needs_a_token(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORGELLM_TOKEN", raising=False)
    assert "access token" in forgellm_error("server", "--host", "0.0.0.0", "--port", "0")
    token = "t" * 8 + "0123456789abcdef"
    # The app as `forgellm server --host 0.0.0.0 --token ...` builds it; the test listens on loopback only.
    app = create_app({"FORGELLM_HOST": "0.0.0.0", "FORGELLM_TOKEN": token, "FORGELLM_ENGINE": "torch"})
    with RunningServer(app, ServerOptions(port=0)) as running:
        with httpx.Client(base_url=running.url, timeout=60) as anonymous:
            for method, path in [
                ("GET", "/api/health"),
                ("GET", "/api/model/status"),
                ("GET", "/v1/models"),
                ("POST", "/api/model/load"),
                ("GET", "/api/openapi.json"),
            ]:
                assert (
                    _error(anonymous.request(method, path, json={"model": "default"}), 401)["type"]
                    == "authentication_error"
                )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{running.url}/v1", api_key="wrong" * 5, max_retries=0).models.list()
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key=token, max_retries=0, timeout=120)
        answer = client.completions.create(model=str(tiny_model_dir), prompt="Hi", max_tokens=2)
        assert answer.usage.completion_tokens == 2


OOM_CHILD = textwrap.dedent("""
    import resource, sys
    from forgellm.serving.app import create_app, registry_of
    from forgellm.serving.main import RunningServer, ServerOptions

    server = RunningServer(create_app({"FORGELLM_ENGINE": "torch"}), ServerOptions(port=0))
    registry_of(server.app).load(sys.argv[1])
    vm_size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))
    # 200 MB more address space than now: the tiny model still generates; 0.5 GB of weights cannot load.
    resource.setrlimit(resource.RLIMIT_AS, (vm_size + 200 * 2**20, resource.RLIM_INFINITY))
    print(server.url, flush=True)
    sys.stdin.read()
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="address-space limit read from /proc")
def test_a_model_that_does_not_fit_in_memory_is_a_clear_409_and_the_server_goes_on(
    tiny_model_dir: Path, embedded_model_dir: Path
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", OOM_CHILD, str(tiny_model_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**_env(), "MALLOC_ARENA_MAX": "2"},
    )
    try:
        url = child.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), "the server did not start"
        with httpx.Client(base_url=url, timeout=120) as client:
            for _ in range(2):  # the failed load leaves nothing behind: the second try says the same
                error = _error(client.post("/api/model/load", json={"model": str(embedded_model_dir)}), 409)
                assert error["type"] == "insufficient_memory"
                assert "not enough memory to load" in error["message"] and "Unload other models" in error["message"]
            status = client.get("/api/model/status").json()
            assert [m["id"] for m in status["cache"]] == [tiny_model_dir.name]
            answer = client.post("/api/model/generate", json={"prompt": "Hi", "max_tokens": 3})
            assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
    finally:
        child.stdin.close()
        child.wait(timeout=30)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "FORGELLM_TOKEN"}
