"""Bind policy, access token on HTTP and SocketIO, login cookie."""

from __future__ import annotations

import pytest

from forgellm.errors import UserError
from forgellm.security import bind_policy, is_loopback
from forgellm.security.auth import COOKIE_NAME
from tests.security_helpers import TOKEN, make_app


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_needs_no_token(host):
    assert is_loopback(host)
    assert bind_policy(host, None) is None
    assert bind_policy(host, TOKEN) == TOKEN  # a token given on loopback is still enforced


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org", "127.0.0.1.example.org"])
def test_other_addresses_refuse_to_start_without_token(host):
    assert not is_loopback(host)
    with pytest.raises(UserError, match="FORGELLM_TOKEN"):
        bind_policy(host, None)
    assert bind_policy(host, TOKEN) == TOKEN


def test_short_token_refused():
    with pytest.raises(UserError, match="at least 16"):
        bind_policy("0.0.0.0", "short")


def test_install_security_refuses_open_public_bind():
    with pytest.raises(UserError, match="refusing to listen on 0.0.0.0"):
        make_app(host="0.0.0.0", token=None)


def test_open_on_loopback_without_token():
    app, _ = make_app()
    assert app.test_client().get("/api/status").status_code == 200


@pytest.fixture
def secured():
    app, socketio = make_app(host="0.0.0.0", token=TOKEN)
    return app, socketio


def test_every_endpoint_requires_the_token(secured):
    app, _ = secured
    client = app.test_client()
    for method, path in [("get", "/api/status"), ("post", "/api/echo"), ("get", "/api/missing"), ("get", "/nope")]:
        response = getattr(client, method)(path, headers={"Host": "203.0.113.5:5001"})
        assert response.status_code == 401, path
        assert response.get_json()["error"]["type"] == "authentication_error"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers", [{"Authorization": f"Bearer {TOKEN}"}, {"X-ForgeLLM-Token": TOKEN}, {"authorization": f"bearer {TOKEN}"}]
)
def test_token_headers_accepted(secured, headers):
    app, _ = secured
    assert app.test_client().get("/api/status", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"X-ForgeLLM-Token": TOKEN[:-1]},
        {"Authorization": TOKEN},
        {"Cookie": f"{COOKIE_NAME}={TOKEN}"},
    ],
)
def test_wrong_tokens_refused(secured, headers):
    app, _ = secured
    assert app.test_client().get("/api/status", headers=headers).status_code == 401


def test_browser_is_sent_to_login_and_cookie_grants_access(secured):
    app, _ = secured
    client = app.test_client()
    page = client.get("/api/status?x=1", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 302 and page.headers["Location"].startswith("/login?next=/api/status")
    form = client.get("/login")
    assert form.status_code == 200 and b'name="token"' in form.data
    wrong = client.post("/login", data={"token": "nope", "next": "/api/status"})
    assert wrong.status_code == 401 and b"wrong token" in wrong.data
    assert client.get("/api/status").status_code == 401
    ok = client.post("/login", data={"token": TOKEN, "next": "/api/status"})
    assert ok.status_code == 302 and ok.headers["Location"] == "/api/status"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert client.get("/api/status").status_code == 200


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"]
)
def test_login_never_redirects_off_site(secured, target):
    app, _ = secured
    response = app.test_client().post("/login", data={"token": TOKEN, "next": target})
    assert response.headers["Location"] == "/"


def test_socketio_refused_without_token(secured):
    app, socketio = secured
    assert not socketio.test_client(app).is_connected()
    assert not socketio.test_client(app, auth={"token": "wrong-token-0123456789"}).is_connected()
    assert socketio.test_client(app, auth={"token": TOKEN}).is_connected()
    assert socketio.test_client(app, headers={"Authorization": f"Bearer {TOKEN}"}).is_connected()


def test_socketio_accepts_login_cookie(secured):
    app, socketio = secured
    http = app.test_client()
    http.post("/login", data={"token": TOKEN})
    assert socketio.test_client(app, flask_test_client=http).is_connected()


def test_socketio_open_without_token():
    app, socketio = make_app()
    assert socketio.test_client(app).is_connected()


def test_socketio_refuses_cross_site_and_rebound_handshakes():
    # Browsers let any page open a WebSocket to localhost: the handshake's Origin and Host decide.
    app, socketio = make_app()
    assert socketio.test_client(app, headers={"Origin": "http://localhost"}).is_connected()
    assert not socketio.test_client(app, headers={"Origin": "http://evil.example"}).is_connected()
    assert not socketio.test_client(app, headers={"Host": "evil.example"}).is_connected()
