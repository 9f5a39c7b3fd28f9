"""The gateway's foundation over real sockets: health, one port for HTTP and WebSocket, auth and
its rate limit, security headers, bind rules and the generated token."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from openclaw.errors import ConfigError
from openclaw.gateway.app import create_app
from tests.e2e.rawhttp import request
from tests.harness import RunningGateway, make_config

ENABLED = {"gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": True}}}}}


def test_health_needs_no_auth_and_carries_security_headers(gateway_factory) -> None:
    gw = gateway_factory()
    reply = request(gw.port, "GET", "/health")
    assert reply.status == 200
    assert reply.json() == {"status": "ok"}
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert reply.headers["Referrer-Policy"] == "no-referrer"
    assert reply.headers["x-request-id"]
    assert gw.token.encode() not in reply.body


def test_unknown_path_and_wrong_method_are_openai_errors(gateway_factory) -> None:
    gw = gateway_factory()
    reply = request(gw.port, "GET", "/nope")
    assert reply.status == 404
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    reply = request(gw.port, "DELETE", "/health")
    assert reply.status == 405
    assert "GET" in reply.headers["Allow"]
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


def test_models_endpoint_absent_while_disabled(gateway_factory) -> None:
    gw = gateway_factory()
    reply = request(gw.port, "GET", "/v1/models", headers=gw.auth_headers())
    assert reply.status == 404


def test_bearer_auth_success_and_failures(gateway_factory) -> None:
    gw = gateway_factory(ENABLED)
    ok = request(gw.port, "GET", "/v1/models", headers=gw.auth_headers())
    assert ok.status == 200
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {gw.token}"},
        {"Authorization": f"Bearer {gw.token}x"},
    ):
        reply = request(gw.port, "GET", "/v1/models", headers=headers)
        assert reply.status == 401, headers
        assert reply.headers["WWW-Authenticate"] == "Bearer"
        err = reply.json()["error"]
        assert err["message"] == "Unauthorized"
        assert set(err) == {"message", "type", "param", "code"}


def test_password_mode_uses_password_and_env_fallback(gateway_factory) -> None:
    gw = gateway_factory(
        {**ENABLED, "gateway": {**ENABLED["gateway"], "auth": {"mode": "password"}}},
        token=None,
        env={"OPENCLAW_GATEWAY_PASSWORD": "hunter2-pass", "OPENCLAW_GATEWAY_TOKEN": "tok"},
    )
    good = {"Authorization": "Bearer hunter2-pass"}
    assert request(gw.port, "GET", "/v1/models", headers=good).status == 200
    bad = {"Authorization": "Bearer tok"}
    assert request(gw.port, "GET", "/v1/models", headers=bad).status == 401


def test_token_env_fallback(gateway_factory) -> None:
    gw = gateway_factory(ENABLED, token=None, env={"OPENCLAW_GATEWAY_TOKEN": "from-env-token"})
    headers = {"Authorization": "Bearer from-env-token"}
    assert request(gw.port, "GET", "/v1/models", headers=headers).status == 200


def test_failed_auth_is_rate_limited_per_address(gateway_factory) -> None:
    limits = {"maxAttempts": 3, "windowMs": 60000, "lockoutMs": 60000, "exemptLoopback": False}
    gw = gateway_factory({"gateway": {**ENABLED["gateway"], "auth": {"rateLimit": limits}}})
    bad = {"Authorization": "Bearer nope"}
    statuses = [
        request(gw.port, "GET", "/v1/models", headers=bad, source="127.0.0.1").status
        for _ in range(3)
    ]
    assert statuses == [401, 401, 401]
    locked = request(gw.port, "GET", "/v1/models", headers=gw.auth_headers(), source="127.0.0.1")
    assert locked.status == 429
    assert 1 <= int(locked.headers["Retry-After"]) <= 60
    assert locked.json()["error"]["type"] == "rate_limit_error"
    other = request(gw.port, "GET", "/v1/models", headers=gw.auth_headers(), source="127.0.0.2")
    assert other.status == 200


def test_loopback_is_exempt_by_default(gateway_factory) -> None:
    limits = {"maxAttempts": 2}
    gw = gateway_factory({"gateway": {**ENABLED["gateway"], "auth": {"rateLimit": limits}}})
    for _ in range(5):
        reply = request(gw.port, "GET", "/v1/models", headers={"Authorization": "Bearer x"})
        assert reply.status == 401
    assert request(gw.port, "GET", "/v1/models", headers=gw.auth_headers()).status == 200


def _ws_call(ws, frame: dict) -> dict:
    ws.send(orjson.dumps(frame).decode())
    while True:
        msg = orjson.loads(ws.recv(timeout=10))
        if msg.get("type") == "res" and msg.get("id") == frame.get("id"):
            return msg


def test_http_and_websocket_share_one_port(gateway_factory) -> None:
    gw = gateway_factory()
    assert request(gw.port, "GET", "/health").status == 200
    with connect(gw.ws_url) as ws:
        hello = _ws_call(
            ws,
            {
                "type": "req",
                "id": "c1",
                "method": "connect",
                "params": {"auth": {"token": gw.token}},
            },
        )
        assert hello["ok"] is True
        assert hello["payload"]["type"] == "hello"
        health = _ws_call(ws, {"type": "req", "id": "h1", "method": "health"})
        assert health == {"type": "res", "id": "h1", "ok": True, "payload": health["payload"]}
        assert health["payload"]["status"] == "ok"
        unknown = _ws_call(ws, {"type": "req", "id": "u1", "method": "nope"})
        assert unknown["ok"] is False
        assert unknown["error"]["code"] == "unknown_method"
        bad = _ws_call(ws, {"type": "req", "id": "b1", "method": "health", "params": []})
        assert bad["ok"] is False


def test_websocket_accepts_bearer_header_on_upgrade(gateway_factory) -> None:
    gw = gateway_factory()
    with connect(gw.ws_url, additional_headers=gw.auth_headers()) as ws:
        hello = _ws_call(ws, {"type": "req", "id": 1, "method": "connect", "params": {}})
        assert hello["ok"] is True


def test_websocket_bad_secret_closes_with_reason(gateway_factory) -> None:
    gw = gateway_factory()
    with connect(gw.ws_url) as ws:
        reply = _ws_call(
            ws,
            {"type": "req", "id": "c", "method": "connect", "params": {"auth": {"token": "bad"}}},
        )
        assert reply["ok"] is False
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1008
        assert "unauthorized" in info.value.rcvd.reason


def test_websocket_first_frame_must_be_connect(gateway_factory) -> None:
    gw = gateway_factory()
    with connect(gw.ws_url) as ws:
        reply = _ws_call(ws, {"type": "req", "id": "x", "method": "health"})
        assert reply["ok"] is False
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)


def test_lan_bind_without_secret_refuses_to_start(state_dir: Path) -> None:
    config = make_config({"gateway": {"bind": "lan"}}, token=None)
    with pytest.raises(ConfigError) as info:
        create_app(config, state_dir=state_dir, env={})
    assert "openclaw config set gateway.auth.token" in str(info.value)
    assert "OPENCLAW_GATEWAY_TOKEN" in str(info.value)
    assert not (state_dir / "credentials").exists()
    # With a secret it is allowed.
    create_app(make_config({"gateway": {"bind": "lan"}}), state_dir=state_dir, env={})
    create_app(
        make_config({"gateway": {"bind": "0.0.0.0"}}, token=None),
        state_dir=state_dir,
        env={"OPENCLAW_GATEWAY_TOKEN": "t"},
    )


def test_bind_to_a_specific_loopback_address(state_dir: Path) -> None:
    config = make_config({"gateway": {"bind": "127.0.0.2"}})
    with RunningGateway(config, state_dir) as gw:
        host = gw.server.servers[0].sockets[0].getsockname()[0]
        assert host == "127.0.0.2"


def test_generated_token_is_kept_and_reused(state_dir: Path, caplog) -> None:
    config = make_config(ENABLED, token=None)
    with RunningGateway(config, state_dir) as first:
        token = first.token
        assert len(token) == 48
        path = state_dir / "credentials" / "gateway-token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        headers = {"Authorization": f"Bearer {token}"}
        assert request(first.port, "GET", "/v1/models", headers=headers).status == 200
    with RunningGateway(config, state_dir) as second:
        assert second.token == token
    assert token not in caplog.text
