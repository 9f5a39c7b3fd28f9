"""Every bad input and upstream failure over raw HTTP: OpenAI-style errors with the right status,
never a traceback or a hung connection."""

from __future__ import annotations

import socket

import orjson
import pytest

from tests.e2e.conftest import chat_config, transcripts, wait_for
from tests.e2e.rawhttp import Reply, request
from tests.upstream import Answer, Drop, FakeUpstream, Hang, HttpError, StreamAbort, StreamError

PATH = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def post(gw, body, *, headers=None, raw: bytes | None = None) -> Reply:
    hdrs = {"Content-Type": "application/json", **gw.auth_headers(), **(headers or {})}
    data = raw if raw is not None else orjson.dumps(body)
    return request(gw.port, "POST", PATH, body=data, headers=hdrs)


def assert_error(reply: Reply, status: int, *, param=None, contains=None, code=None) -> dict:
    assert reply.status == status, reply.body
    err = reply.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if param is not None:
        assert err["param"] == param
    if contains is not None:
        assert contains in err["message"]
    if code is not None:
        assert err["code"] == code
    assert b"Traceback" not in reply.body
    return err


def test_body_limit_checked_on_content_length_and_while_reading(gateway_factory, upstream) -> None:
    cfg = chat_config(upstream)
    cfg["gateway"]["http"]["endpoints"]["chatCompletions"]["maxBodyBytes"] = 1000
    gw = gateway_factory(cfg)
    big = orjson.dumps({"model": "openclaw", "messages": [{"role": "user", "content": "x" * 2000}]})
    assert_error(post(gw, None, raw=big), 413)
    # Chunked: no Content-Length, the limit applies while reading.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        for _ in range(3):
            sock.sendall(b"200\r\n" + b"x" * 512 + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 413")


def test_slow_body_gets_408(gateway_factory, upstream) -> None:
    cfg = chat_config(upstream)
    cfg["gateway"]["http"]["bodyTimeoutMs"] = 300
    gw = gateway_factory(cfg)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        sock.sendall(head.encode())
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 408")


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _image_message(*urls: str, text: str | None = "what is this") -> list[dict]:
    parts: list[dict] = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts}]


def test_images_reach_a_model_that_takes_them(chat_gateway, upstream) -> None:
    reply = post(chat_gateway, {"model": "openclaw", "messages": _image_message(_data_uri(_png()))})
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"] == "Echo: what is this [images: 1]"
    parts = upstream.model_requests[-1].body["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "what is this"}
    assert parts[1]["image_url"]["url"] == _data_uri(_png())
    only = post(
        chat_gateway,
        {"model": "openclaw", "messages": _image_message(_data_uri(_png()), text=None)},
    )
    assert only.status == 200
    sent = upstream.model_requests[-1].body["messages"][-1]["content"]
    assert sent[0]["text"] == "User sent image(s) with no text."


def test_bad_images_are_refused(gateway_factory, upstream) -> None:
    cfg = chat_config(upstream)
    cfg["gateway"]["http"]["endpoints"]["chatCompletions"]["maxImageParts"] = 2
    gw = gateway_factory(cfg)
    invalid = "Invalid image_url content in `messages`."
    for url in (
        "data:image/png;base64,!!!not-base64!!!",
        _data_uri(b"plain text, not an image"),
        _data_uri(_png(), "image/jpeg"),
        "data:image/png,rawnotbase64",
        "ftp://example.com/a.png",
    ):
        assert_error(
            post(gw, {"model": "openclaw", "messages": _image_message(url)}),
            400,
            contains=invalid if not url.startswith("ftp") else None,
        )
    remote = post(gw, {"model": "openclaw", "messages": _image_message("http://example.com/a.png")})
    assert_error(remote, 400, contains="allowUrl")
    many = post(gw, {"model": "openclaw", "messages": _image_message(*[_data_uri(_png())] * 3)})
    assert_error(many, 400, contains="at most 2")
    assert upstream.model_requests == []


def test_remote_image_urls_never_reach_private_addresses(gateway_factory, upstream) -> None:
    cfg = chat_config(upstream)
    cfg["gateway"]["http"]["endpoints"]["chatCompletions"]["images"] = {"allowUrl": True}
    gw = gateway_factory(cfg)
    for url in (
        f"{upstream.root_url}/img.png",
        "http://localhost:9/x.png",
        "http://169.254.169.254/latest",
    ):
        assert_error(post(gw, {"model": "openclaw", "messages": _image_message(url)}), 400)
    assert upstream.requests == []


def test_model_without_image_input_says_so(gateway_factory, upstream) -> None:
    cfg = chat_config(upstream)
    cfg["agents"]["defaults"]["model"] = "fake/text-only"
    gw = gateway_factory(cfg)
    reply = post(gw, {"model": "openclaw", "messages": _image_message(_data_uri(_png()))})
    assert_error(reply, 400, contains="cannot take images")


def test_images_only_in_the_active_turn(chat_gateway, upstream) -> None:
    msgs = [
        *_image_message(_data_uri(_png())),
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and now?"},
    ]
    reply = post(chat_gateway, {"model": "openclaw", "messages": msgs})
    assert reply.status == 200
    first = upstream.model_requests[-1].body["messages"][0]
    assert first == {"role": "user", "content": "what is this"}


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        (HttpError.rate_limited(retry_after=30), 429, "upstream_rate_limited"),
        (HttpError.server_error(), 502, "upstream_unavailable"),
        (HttpError.unauthorized(), 502, "upstream_auth_failed"),
        (Drop(), 502, "upstream_unavailable"),
        (HttpError.context_length_exceeded(), 400, "context_length_exceeded"),
        (HttpError(400, message="bad things in the request"), 400, "upstream_bad_request"),
    ],
)
def test_upstream_failures_before_the_response(
    chat_gateway, upstream, behaviour, status, code
) -> None:
    upstream.script(behaviour)
    reply = post(chat_gateway, {"model": "openclaw", "messages": USER})
    err = assert_error(reply, status, code=code)
    if status == 429:
        assert reply.headers["Retry-After"] == "30"
    if code == "upstream_bad_request":
        assert "bad things in the request" in err["message"]
    assert reply.headers["x-openclaw-session-key"].startswith("agent:main:openai:")


def test_upstream_timeout_is_504(gateway_factory, upstream) -> None:
    gw = gateway_factory(chat_config(upstream, provider={"timeoutSeconds": 0.3}))
    upstream.script(Hang())
    assert_error(post(gw, {"model": "openclaw", "messages": USER}), 504, code="upstream_timeout")


def test_unreachable_upstream_is_502(gateway_factory, upstream) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    gw = gateway_factory(chat_config(upstream, provider={"baseUrl": f"http://127.0.0.1:{dead}/v1"}))
    err = assert_error(post(gw, {"model": "openclaw", "messages": USER}), 502)
    assert "cannot connect" in err["message"]


def test_retries_before_first_token_then_succeeds(gateway_factory, upstream) -> None:
    gw = gateway_factory(chat_config(upstream, provider={"maxRetries": 2}))
    upstream.script(HttpError.unavailable(), HttpError.rate_limited(retry_after=0))
    reply = post(gw, {"model": "openclaw", "messages": USER})
    assert reply.status == 200
    assert len(upstream.model_requests) == 3


def test_no_retry_after_the_first_token(gateway_factory, upstream) -> None:
    gw = gateway_factory(chat_config(upstream, provider={"maxRetries": 2}))
    upstream.script(StreamAbort(after=2))
    reply = post(gw, {"model": "openclaw", "messages": USER, "stream": True})
    assert reply.status == 200
    assert len(upstream.model_requests) == 1


def test_fallback_model_answers_when_the_primary_fails(gateway_factory, upstream) -> None:
    with FakeUpstream() as backup:
        cfg = chat_config(upstream)
        cfg["models"]["providers"]["backup"] = {
            "api": "openai-completions",
            "baseUrl": backup.base_url,
            "models": [{"id": "b"}],
        }
        cfg["agents"]["defaults"]["model"] = {
            "primary": "fake/fake-model",
            "fallbacks": ["backup/b"],
        }
        gw = gateway_factory(cfg)
        upstream.script(HttpError.unavailable())
        reply = post(gw, {"model": "openclaw", "messages": USER})
        assert reply.status == 200
        assert len(backup.model_requests) == 1
        assert backup.model_requests[0].body["model"] == "b"


def _events(body: bytes) -> list[bytes]:
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


@pytest.mark.parametrize(
    "behaviour", [StreamAbort(after=2), StreamError(after=2, message="model exploded")]
)
def test_mid_stream_error_is_an_event_then_done(chat_gateway, upstream, behaviour) -> None:
    upstream.script(behaviour)
    reply = post(
        chat_gateway,
        {"model": "openclaw", "messages": [{"role": "user", "content": "a b c d"}], "stream": True},
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/event-stream"
    events = _events(reply.body)
    assert events[-1] == b"[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if isinstance(behaviour, StreamError):
        assert "model exploded" in error["message"]
    text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text == "Echo: a "


def test_a_mid_stream_rate_limit_keeps_its_type(chat_gateway, upstream) -> None:
    """One table for statuses and error events: a rate limit reported mid-answer is still a
    rate limit, not a plain 502."""
    upstream.script(
        StreamError(after=1, message="slow down", type="requests", code="rate_limit_exceeded")
    )
    reply = post(
        chat_gateway,
        {"model": "openclaw", "messages": [{"role": "user", "content": "a b c"}], "stream": True},
    )
    events = _events(reply.body)
    assert events[-1] == b"[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "upstream_rate_limited")
    assert "slow down" in error["message"]


def test_sse_framing_and_headers(chat_gateway) -> None:
    reply = post(chat_gateway, {"model": "openclaw", "messages": USER, "stream": True})
    assert reply.headers["Content-Type"] == "text/event-stream"
    assert reply.headers["Cache-Control"] == "no-cache"
    assert reply.headers["X-Accel-Buffering"] == "no"
    assert reply.headers["x-openclaw-session-key"].startswith("agent:main:openai:")
    assert reply.body.endswith(b"data: [DONE]\n\n")
    for block in reply.body.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: ")


def test_keepalive_comment_while_the_model_is_silent(gateway_factory, upstream) -> None:
    cfg = chat_config(upstream)
    cfg["gateway"]["http"]["sseKeepaliveMs"] = 150
    gw = gateway_factory(cfg)
    upstream.script(Answer(first_token_delay=0.8))
    reply = post(gw, {"model": "openclaw", "messages": USER, "stream": True})
    assert reply.status == 200
    assert b": keep-alive\n\n" in reply.body
    assert reply.body.endswith(b"data: [DONE]\n\n")


def test_first_byte_leaves_before_the_model_finishes(chat_gateway, upstream) -> None:
    upstream.script(Answer(text="w " * 20, chunk_delay=0.5))  # 10 s: the check comes first
    with socket.create_connection(("127.0.0.1", chat_gateway.port), timeout=10) as sock:
        body = orjson.dumps({"model": "openclaw", "messages": USER, "stream": True, "user": "f"})
        sock.sendall(
            (
                f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {chat_gateway.token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        buf = b""
        while b'"content":"w ' not in buf:
            buf += sock.recv(65536)
        # The first token is here and the run has not ended: its turn is not stored yet.
        assert transcripts(chat_gateway.state_dir) == []


def _disconnect_after_first_chunk(gw, payload: dict, upstream: FakeUpstream) -> None:
    before = len(upstream.requests)
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    body = orjson.dumps(payload)
    sock.sendall(
        (
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    if payload.get("stream"):
        buf = b""
        while b'"delta":{"content":"' not in buf:
            buf += sock.recv(65536)
    else:
        assert upstream.wait_for_requests(before + 1, timeout=10)  # the run is at the model
    sock.close()


def test_disconnect_cancels_the_stream_and_stores_the_partial_turn(chat_gateway, upstream) -> None:
    upstream.script(Answer(text="w " * 200, chunk_delay=0.05))
    _disconnect_after_first_chunk(
        chat_gateway,
        {
            "model": "openclaw",
            "messages": [{"role": "user", "content": "long"}],
            "stream": True,
            "user": "gone",
        },
        upstream,
    )
    assert upstream.wait_for_disconnect(timeout=10)
    records = wait_for(
        lambda: [
            r for t in transcripts(chat_gateway.state_dir) for r in t if r["role"] == "assistant"
        ]
    )
    assert records[-1]["stopReason"] == "aborted"
    assert records[-1]["content"].startswith("w ")
    assert len(records[-1]["content"]) < len("w " * 200)


def test_disconnect_cancels_a_non_streaming_request(chat_gateway, upstream) -> None:
    upstream.script(Answer(first_token_delay=10))
    _disconnect_after_first_chunk(
        chat_gateway, {"model": "openclaw", "messages": USER, "user": "gone2"}, upstream
    )
    assert upstream.wait_for_disconnect(timeout=10)
    records = wait_for(
        lambda: [
            r for t in transcripts(chat_gateway.state_dir) for r in t if r["role"] == "assistant"
        ]
    )
    assert records[-1]["stopReason"] == "aborted"
