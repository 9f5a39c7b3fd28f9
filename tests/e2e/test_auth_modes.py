"""The auth modes besides token and password, accepted and refused, on HTTP and the WebSocket:
``none`` (loopback only unless explicitly allowed) and ``trusted-proxy`` (the proxy's address
and its user header; the user then scopes stored responses)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai import OpenAI
from websockets.sync.client import connect

from openclaw.errors import ConfigError
from openclaw.gateway.app import create_app
from tests.e2e.conftest import chat_config
from tests.harness import RunningGateway, make_config
from tests.upstream import FakeUpstream

ChatBody = {"model": "openclaw", "messages": [{"role": "user", "content": "hi"}]}


def auth_config(up: FakeUpstream, auth: dict[str, Any]) -> dict[str, Any]:
    cfg = chat_config(up)
    cfg["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    cfg["gateway"]["auth"] = auth
    return cfg


def ws_connect(gw: RunningGateway, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with connect(gw.ws_url, additional_headers=headers or {}) as ws:
        ws.send(
            orjson.dumps({"type": "req", "id": "c", "method": "connect", "params": {}}).decode()
        )
        reply: dict[str, Any] = orjson.loads(ws.recv(timeout=10))
        return reply


def test_none_lets_anyone_in_on_loopback(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    gw = gateway_factory(auth_config(upstream, {"mode": "none"}), token=None)
    res = httpx.post(gw.url + "/v1/chat/completions", json=ChatBody)
    assert res.status_code == 200
    with OpenAI(base_url=gw.url + "/v1", api_key="anything", max_retries=0) as c:
        first = c.responses.create(model="openclaw", input="one")
        assert c.responses.retrieve(first.id).output_text == "Echo: one"
    assert ws_connect(gw)["ok"] is True


def test_none_beyond_loopback_needs_an_explicit_yes(tmp_path: Path, upstream: FakeUpstream) -> None:
    cfg = auth_config(upstream, {"mode": "none"})
    cfg["gateway"]["bind"] = "lan"
    with pytest.raises(ConfigError, match="allowUnauthenticated"):
        create_app(make_config(cfg, token=None), state_dir=tmp_path, env={})
    cfg["gateway"]["auth"]["allowUnauthenticated"] = True
    assert create_app(make_config(cfg, token=None), state_dir=tmp_path, env={})


def proxy(upstream: FakeUpstream, **trusted: Any) -> dict[str, Any]:
    return auth_config(
        upstream,
        {"mode": "trusted-proxy", "trustedProxy": {"userHeader": "x-forwarded-user", **trusted}},
    )


def test_trusted_proxy_accepts_its_users_and_scopes_their_responses(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    cfg = proxy(upstream, addresses=["127.0.0.0/8"], allowLoopback=True)
    gw = gateway_factory(cfg, token=None)
    url = gw.url + "/v1/chat/completions"
    assert httpx.post(url, json=ChatBody, headers={"x-forwarded-user": "alice"}).status_code == 200
    # No user header: not from the proxy's authenticated users.
    res = httpx.post(url, json=ChatBody)
    assert res.status_code == 401 and "x-forwarded-user" in res.json()["error"]["message"]
    alice = OpenAI(
        base_url=gw.url + "/v1",
        api_key="unused",
        max_retries=0,
        default_headers={"x-forwarded-user": "alice"},
    )
    bob = alice.with_options(default_headers={"x-forwarded-user": "bob"})
    mine = alice.responses.create(model="openclaw", input="alice's")
    assert alice.responses.retrieve(mine.id).output_text == "Echo: alice's"
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(mine.id)
    with pytest.raises(openai.BadRequestError):
        bob.responses.create(model="openclaw", input="x", previous_response_id=mine.id)
    assert ws_connect(gw, {"x-forwarded-user": "alice"})["ok"] is True
    assert ws_connect(gw)["ok"] is False


@pytest.mark.parametrize(
    "trusted",
    [
        {"addresses": ["127.0.0.0/8"]},  # a loopback proxy, not allowed
        {"addresses": ["10.0.0.0/8"], "allowLoopback": True},  # not one of the proxies
    ],
)
def test_trusted_proxy_refuses_other_addresses(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway], trusted: dict[str, Any]
) -> None:
    gw = gateway_factory(proxy(upstream, **trusted), token=None)
    res = httpx.post(
        gw.url + "/v1/chat/completions", json=ChatBody, headers={"x-forwarded-user": "alice"}
    )
    assert res.status_code == 401
    assert res.json()["error"]["message"] == "The request did not come through a trusted proxy."
    assert ws_connect(gw, {"x-forwarded-user": "alice"})["ok"] is False


def test_trusted_proxy_needs_addresses(tmp_path: Path, upstream: FakeUpstream) -> None:
    cfg = proxy(upstream)
    with pytest.raises(ConfigError, match="trustedProxy.addresses"):
        create_app(make_config(cfg, token=None), state_dir=tmp_path, env={})
    cfg["gateway"]["auth"]["trustedProxy"]["addresses"] = ["not-an-ip"]
    with pytest.raises(ConfigError, match="not an address or CIDR"):
        make_config(cfg, token=None)


def test_token_mode_still_needs_the_token(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    gw = gateway_factory(auth_config(upstream, {"mode": "token"}))
    assert (
        httpx.post(gw.url + "/v1/responses", json={"model": "openclaw", "input": "x"}).status_code
        == 401
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},  # a page of another site (CSRF)
        {"sec-fetch-site": "cross-site"},
        {"host": "evil.example"},  # DNS rebinding: the page's own name, pointed at 127.0.0.1
        {"host": "evil.example", "origin": "http://evil.example"},
    ],
)
def test_none_refuses_web_pages(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway], headers: dict[str, str]
) -> None:
    """Without a secret, a page the user visits must not drive the local gateway."""
    gw = gateway_factory(auth_config(upstream, {"mode": "none"}), token=None)
    res = httpx.post(
        gw.url + "/v1/chat/completions",
        content=orjson.dumps(ChatBody),
        headers={"content-type": "text/plain", **headers},
    )
    assert res.status_code == 403, res.text
    assert res.json()["error"]["code"] == "forbidden"
    assert upstream.model_requests == []
    # The same page on the WebSocket.
    assert ws_refused(gw, headers)
    assert raw_upgrade(gw, {"Host": f"127.0.0.1:{gw.port}"}) == 101
    # A page of the gateway's own origin, CLIs and SDKs (no Origin) are served.
    own = {"origin": gw.url, "sec-fetch-site": "same-origin"}
    assert (
        httpx.post(gw.url + "/v1/chat/completions", json=ChatBody, headers=own).status_code == 200
    )


def ws_refused(gw: RunningGateway, headers: dict[str, str]) -> bool:
    """Whether the WebSocket refuses a client sending ``headers`` (the upgrade's Host header is
    sent by hand: the client library writes its own)."""
    host = headers.get("host")
    extra = {k: v for k, v in headers.items() if k != "host"}
    if host is not None:
        return raw_upgrade(gw, {"Host": host, **extra}) == 403
    try:
        reply = ws_connect(gw, extra)
    except Exception:  # the upgrade was refused
        return True
    return reply["ok"] is False


def raw_upgrade(gw: RunningGateway, headers: dict[str, str]) -> int:
    """The status of a WebSocket upgrade request sent with exactly ``headers``."""
    lines = [
        "GET / HTTP/1.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def test_trusted_proxy_users_each_have_their_own_sessions(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    """Regression: bob reached alice's conversation by sending her session key or `user`."""
    gw = gateway_factory(proxy(upstream, addresses=["127.0.0.0/8"], allowLoopback=True), token=None)
    url = gw.url + "/v1/chat/completions"

    def chat(who: str, text: str, **extra: Any) -> httpx.Response:
        headers = {"x-forwarded-user": who, **extra.pop("headers", {})}
        body = {"model": "openclaw", "messages": [{"role": "user", "content": text}], **extra}
        return httpx.post(url, json=body, headers=headers, timeout=30)

    first = chat("alice", "my pin is 1234", headers={"x-openclaw-session-key": "shared"})
    alice_key = first.headers["x-openclaw-session-key"]
    assert alice_key == "agent:main:u-alice:shared"
    chat("bob", "what is the pin?", headers={"x-openclaw-session-key": "shared"})
    assert "1234" not in str(upstream.model_requests[-1].body)
    chat("bob", "what is the pin?", headers={"x-openclaw-session-key": alice_key})
    assert "1234" not in str(upstream.model_requests[-1].body)
    # The key handed back works for its owner.
    chat("alice", "again?", headers={"x-openclaw-session-key": alice_key})
    assert "1234" in str(upstream.model_requests[-1].body)
    chat("alice", "note 9", user="same")
    chat("bob", "notes?", user="same")
    assert "note 9" not in str(upstream.model_requests[-1].body)
    with connect(gw.ws_url, additional_headers={"x-forwarded-user": "bob"}) as ws:

        def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
            frame = {"type": "req", "id": method, "method": method, "params": params}
            ws.send(orjson.dumps(frame).decode())
            while True:
                msg: dict[str, Any] = orjson.loads(ws.recv(timeout=10))
                if msg.get("id") == method:
                    return msg

        assert call("connect", {})["ok"] is True
        listed = call("sessions.list", {})["payload"]["sessions"]
        assert listed and all(s["key"].startswith("agent:main:u-bob:") for s in listed)
        # Alice's key names bob's own session under bob's name (made by his request above).
        history = call("sessions.history", {"sessionKey": alice_key})
        assert history["payload"]["sessionKey"] == "agent:main:u-bob:u-alice:shared"
        assert "1234" not in str(history)
        missing = call("sessions.history", {"sessionKey": "agent:main:u-alice:other"})
        assert missing["ok"] is False and missing["error"]["code"] == "session_not_found"
