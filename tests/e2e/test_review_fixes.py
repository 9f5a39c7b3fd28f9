"""Regression tests for defects found in review."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from openclaw.errors import InvalidRequestError
from openclaw.gateway.images import _read_capped, is_public_address
from tests.e2e.conftest import chat_config
from tests.e2e.rawhttp import request
from tests.upstream import Answer, HttpError


def post(gw, body, headers=None):
    return request(
        gw.port,
        "POST",
        "/v1/chat/completions",
        body=orjson.dumps(body),
        headers={**gw.auth_headers(), "Content-Type": "application/json", **(headers or {})},
    )


def test_websocket_refuses_cross_origin_pages(chat_gateway) -> None:
    with (
        pytest.raises(InvalidStatus) as info,
        connect(chat_gateway.ws_url, origin="http://evil.example"),
    ):
        pass
    assert info.value.response.status_code == 403
    same = f"http://127.0.0.1:{chat_gateway.port}"
    with connect(chat_gateway.ws_url, origin=same) as ws:
        ws.send(
            orjson.dumps(
                {
                    "type": "req",
                    "id": 1,
                    "method": "connect",
                    "params": {"auth": {"token": chat_gateway.token}},
                }
            ).decode()
        )
        assert orjson.loads(ws.recv(timeout=10))["ok"] is True


def test_websocket_binary_frame_gets_an_error_frame(chat_gateway) -> None:
    with connect(chat_gateway.ws_url) as ws:
        ws.send(
            orjson.dumps(
                {
                    "type": "req",
                    "id": 1,
                    "method": "connect",
                    "params": {"auth": {"token": chat_gateway.token}},
                }
            ).decode()
        )
        ws.recv(timeout=10)
        ws.send(b"\x00\x01binary")
        reply = orjson.loads(ws.recv(timeout=10))
        assert reply["ok"] is False
        ws.send(orjson.dumps({"type": "req", "id": 2, "method": "health"}).decode())
        assert orjson.loads(ws.recv(timeout=10))["ok"] is True


@pytest.mark.parametrize("chunk", [b'{"choices": ["oops"]}', b'{"choices": [{"delta": 5}]}'])
def test_malformed_upstream_events_are_502(gateway_factory, chunk) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + chunk + b"\n\n")
        return resp

    import threading

    from tests.upstream.server import FakeUpstream  # noqa: F401 - same port style as the fake

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        cfg = {
            "gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": True}}}},
            "models": {
                "providers": {
                    "bad": {
                        "api": "openai-completions",
                        "baseUrl": f"http://127.0.0.1:{port}/v1",
                        "maxRetries": 0,
                        "models": [{"id": "m"}],
                    }
                }
            },
        }
        gw = gateway_factory(cfg)
        reply = post(
            gw,
            {"model": "openclaw", "messages": [{"role": "user", "content": "x"}], "stream": True},
        )
        events = [line for line in reply.body.split(b"\n") if line.startswith(b"data: ")]
        if reply.status == 200:
            assert b'"error"' in events[-2]
        else:
            assert reply.status == 502
        assert b"Traceback" not in reply.body
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_max_tokens_field_is_configurable(gateway_factory, upstream) -> None:
    gw = gateway_factory(
        chat_config(upstream, provider={"maxTokensField": "max_completion_tokens"})
    )
    assert (
        post(
            gw,
            {
                "model": "openclaw",
                "messages": [{"role": "user", "content": "a b c"}],
                "max_tokens": 2,
            },
        ).status
        == 200
    )
    body = upstream.model_requests[-1].body
    assert body["max_completion_tokens"] == 2
    assert "max_tokens" not in body


def test_empty_user_message_is_400(chat_gateway) -> None:
    for content in (None, "", []):
        reply = post(
            chat_gateway, {"model": "openclaw", "messages": [{"role": "user", "content": content}]}
        )
        assert reply.status == 400
        assert reply.json()["error"]["param"] == "messages"


def test_a_busy_session_does_not_hold_run_slots(gateway_factory, upstream) -> None:
    """Runs queued behind one busy session must not take the run slots another session needs:
    bob's run (a free session) is answered before alice's second one (queued behind her first)."""
    cfg = chat_config(upstream)
    cfg["agents"]["defaults"]["maxConcurrent"] = 2
    gw = gateway_factory(cfg)
    upstream.default = Answer(first_token_delay=1.0)
    import threading

    finished: list[str] = []

    def call(user: str, tag: str) -> None:
        post(
            gw, {"model": "openclaw", "messages": [{"role": "user", "content": "x"}], "user": user}
        )
        finished.append(tag)

    threads = [threading.Thread(target=call, args=("alice", f"a{i}")) for i in range(3)]
    for t in threads:
        t.start()
    assert upstream.wait_for_requests(1, timeout=10)  # alice's first is at the model
    bob = threading.Thread(target=call, args=("bob", "bob"))
    bob.start()
    for t in [*threads, bob]:
        t.join(30)
    # At most alice's first run (the one holding her session) ends before bob's.
    assert finished.index("bob") <= 1, finished


async def test_remote_image_bodies_are_read_whole_and_capped() -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2_000_000

    async def image(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        for i in range(0, len(big), 100_000):
            await resp.write(big[i : i + 100_000])
        return resp

    app = web.Application()
    app.router.add_get("/big.png", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/big.png") as resp:
                assert await _read_capped(resp, 3_000_000) == big
            async with session.get(f"http://127.0.0.1:{port}/big.png") as resp:
                with pytest.raises(InvalidRequestError):
                    await _read_capped(resp, 1_000_000)
    finally:
        await runner.cleanup()


def test_addresses_embedding_ipv4_are_not_public() -> None:
    for addr in (
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "::7f00:1",
        "::ffff:127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
    ):
        assert not is_public_address(addr), addr
    assert is_public_address("8.8.8.8")


def test_upstream_error_then_ok(chat_gateway, upstream) -> None:
    upstream.script(HttpError.server_error())
    assert (
        post(
            chat_gateway, {"model": "openclaw", "messages": [{"role": "user", "content": "x"}]}
        ).status
        == 502
    )
    assert (
        post(
            chat_gateway, {"model": "openclaw", "messages": [{"role": "user", "content": "x"}]}
        ).status
        == 200
    )


def test_gateway_busy_is_503_with_retry_after(gateway_factory, upstream) -> None:
    import threading

    cfg = chat_config(upstream)
    cfg["agents"]["defaults"]["maxConcurrent"] = 1
    cfg["agents"]["defaults"]["maxQueued"] = 0
    gw = gateway_factory(cfg)
    upstream.script(Answer(first_token_delay=1.0))
    slow = threading.Thread(
        target=post,
        args=(gw, {"model": "openclaw", "messages": [{"role": "user", "content": "slow"}]}),
    )
    slow.start()
    assert upstream.wait_for_requests(1, timeout=10)
    reply = post(gw, {"model": "openclaw", "messages": [{"role": "user", "content": "x"}]})
    slow.join(10)
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    assert reply.json()["error"]["code"] == "gateway_busy"
