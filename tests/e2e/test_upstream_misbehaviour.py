"""Upstreams that misbehave: malformed events are a 502, a failure does not stick, and the
request's token limit goes out under the field the provider asks for."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web

from tests.e2e.conftest import chat_config
from tests.e2e.rawhttp import request
from tests.upstream import HttpError


def post(gw, body, headers=None):
    return request(
        gw.port,
        "POST",
        "/v1/chat/completions",
        body=orjson.dumps(body),
        headers={**gw.auth_headers(), "Content-Type": "application/json", **(headers or {})},
    )


@pytest.mark.parametrize("chunk", [b'{"choices": ["oops"]}', b'{"choices": [{"delta": 5}]}'])
def test_malformed_upstream_events_are_502(gateway_factory, chunk) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + chunk + b"\n\n")
        return resp

    import threading

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
