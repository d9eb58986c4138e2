"""Cross-site checks, body limit, JSON errors, request ids and JSON logs without secrets."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from forgellm.security import configure_logging, redact
from forgellm.workspace import Workspace
from tests.security_helpers import TOKEN, make_app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def client():
    app, _ = make_app()
    return app.test_client()


@pytest.mark.parametrize(
    "origin_header",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:9999"},
        {"Referer": "http://evil.example/page"},
    ],
)
def test_cross_site_post_refused(client, origin_header):
    response = client.post("/api/echo", json={"a": 1}, headers=origin_header)
    assert response.status_code == 403
    assert "cross-site" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://localhost"}, {"Referer": "http://localhost/chat"}])
def test_same_site_and_headerless_post_allowed(client, headers):
    response = client.post("/api/echo", json={"a": 1}, headers=headers)
    assert response.status_code == 200 and response.get_json() == {"got": {"a": 1}}


def test_cross_site_get_is_harmless_and_allowed(client):
    assert client.get("/api/status", headers={"Origin": "http://evil.example"}).status_code == 200


def test_dns_rebinding_refused_on_loopback(client):
    response = client.get("/api/status", headers={"Host": "attacker.example:5001"})
    assert response.status_code == 403
    for host in ("127.0.0.1:5001", "localhost", "[::1]:5002"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200


def test_no_cors_and_no_framing(client):
    response = client.get("/api/status", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_no_wildcard_cors_anywhere_in_the_tree():
    pattern = re.compile(r"""(Access-Control-Allow-Origin["']?\s*[:,=]\s*["']\*|cors_allowed_origins\s*=\s*["']\*)""")
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "forgellm").rglob("*.py")
        if "node_modules" not in path.parts and pattern.search(path.read_text(errors="replace"))
    ]
    assert offenders == []


def test_body_over_limit_gets_413_json(client):
    response = client.post("/api/echo", data=b"x" * 2048, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["type"] == "request_too_large"


def test_body_without_length_over_limit_gets_413():
    # A chunked upload has no Content-Length: the limited stream cuts it off while reading.
    app, _ = make_app()
    environ = EnvironBuilder(
        path="/api/echo", method="POST", data=b"x" * 2048, content_type="application/json"
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    _, status, _ = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("413")


def test_errors_are_json_never_html(client):
    cases = {"/api/missing": 404, "/nowhere": 404, "/api/bug": 500}
    for path, status in cases.items():
        response = client.get(path)
        assert response.status_code == status
        assert response.is_json and set(response.get_json()["error"]) == {"message", "type", "field", "param"}
        assert b"Traceback" not in response.data and b"<html" not in response.data.lower()
    wrong_method = client.delete("/api/status")
    assert wrong_method.status_code == 405 and wrong_method.is_json and "GET" in wrong_method.headers["Allow"]


def test_request_id_echoed_or_created(client):
    created = client.get("/api/status").headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", created)
    assert client.get("/api/status", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
    injected = client.get("/api/status", headers={"X-Request-Id": "<script>x</script>"}).headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", injected)


def test_logs_are_json_with_request_ids_and_no_token(workspace, monkeypatch):
    log_path = configure_logging("security-test", Workspace.current())
    try:
        app, _ = make_app(host="0.0.0.0", token=TOKEN)
        client = app.test_client()
        client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}", "X-Request-Id": "req-1"})
        client.get(f"/login?token={TOKEN}")
        client.get("/api/bug", headers={"X-ForgeLLM-Token": TOKEN, "X-Request-Id": "req-2"})
        logging.getLogger("forgellm.test").warning("user passed --token %s and api_key=sk-abcdefghijklmnopqrstu", TOKEN)
    finally:
        _remove_handler("security-test")
    assert log_path.parent == workspace / "logs"
    text = log_path.read_text()
    assert TOKEN not in text and "sk-abcdefghijklmnopqrstu" not in text
    entries = [json.loads(line) for line in text.splitlines()]
    access = {e["request_id"]: e for e in entries if e["logger"] == "forgellm.http"}
    assert access["req-1"]["status"] == 200 and access["req-1"]["path"] == "/api/status"
    assert access["req-2"]["status"] == 500
    crash = next(e for e in entries if e["level"] == "ERROR" and e["request_id"] == "req-2")
    assert "ZeroDivisionError" in crash["exception"]
    assert any("[REDACTED]" in e["message"] for e in entries if e["logger"] == "forgellm.test")


def test_log_files_rotate(workspace, monkeypatch):
    monkeypatch.setattr("forgellm.security.logs.MAX_LOG_BYTES", 2000)
    path = configure_logging("rotation-test", Workspace.current())
    try:
        for i in range(100):
            logging.getLogger("forgellm.test").warning("line %d %s", i, "x" * 50)
    finally:
        _remove_handler("rotation-test")
    assert path.exists() and path.with_name("rotation-test.log.1").exists()
    assert path.stat().st_size <= 2000


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdef.123",
        "GET /login?token=s3cret&next=/",
        '{"api_key": "abc123"}',
        "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz",
        "password=hunter2",
    ],
)
def test_redact_patterns(text):
    out = redact(text)
    assert "[REDACTED]" in out
    for secret in ("abcdef.123", "s3cret", "abc123", "hf_abcdefghij", "hunter2"):
        assert secret not in out


def _remove_handler(name: str) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "forgellm_log", None) == name:
            root.removeHandler(handler)
            handler.close()
