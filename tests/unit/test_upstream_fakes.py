"""The fake upstream servers (tests/upstream) behave like the APIs they imitate."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.upstream import (
    Answer,
    Drop,
    FakeUpstream,
    Hang,
    HttpError,
    StreamAbort,
    StreamError,
    ToolCalls,
    running_upstream,
    slow_stream,
)

KEY = "sk-upstream-test"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with running_upstream(api_key=KEY) as up:
        yield up


@pytest.fixture
def client(upstream: FakeUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=upstream.base_url, api_key=KEY, max_retries=0, timeout=5) as c:
        yield c


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def sse_events(resp: aiohttp.ClientResponse) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) for each SSE event of a response."""
    events: list[tuple[str | None, Any]] = []
    text = (await resp.read()).decode()
    assert text.endswith("\n\n")
    for block in text.split("\n\n")[:-1]:
        name, data = None, None
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data = value if value == "[DONE]" else orjson.loads(value)
        events.append((name, data))
    return events


# ---- OpenAI side, through the official SDK ------------------------------------------------


def test_openai_non_stream_echo_usage_and_recording(
    upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    r = client.chat.completions.create(
        model="m-1",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "hello big world"},
        ],
        max_tokens=50,
    )
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == "m-1"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "Echo: hello big world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (9, 4, 13)

    [req] = upstream.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["Authorization"] == f"Bearer {KEY}"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.body["max_tokens"] == 50
    assert req.body["messages"][-1] == {"role": "user", "content": "hello big world"}


def test_openai_stream_word_chunks_with_usage_chunk(
    upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(
        model="m-2",
        messages=user("one two  three"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    contents = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert contents == ["Echo: ", "one ", "two  ", "three"]
    assert all(c.object == "chat.completion.chunk" and c.model == "m-2" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-2].choices[0].delta.content is None
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 4)
    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}


def test_openai_stream_truncates_at_max_tokens(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=user("a b c d e"),
            stream=True,
            max_completion_tokens=3,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: a b "
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_usage_chunk_only_when_asked_and_never_with_no_usage(
    upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    plain = list(client.chat.completions.create(model="m", messages=user("x"), stream=True))
    assert plain[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in plain)

    upstream.script(Answer(no_usage=True), Answer(no_usage=True))
    asked = list(
        client.chat.completions.create(
            model="m", messages=user("x"), stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in asked)
    assert client.chat.completions.create(model="m", messages=user("x")).usage is None


def test_content_array_text_and_images(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look at"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "these"},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content == "Echo: look at these [images: 2]"
    assert r.usage is not None
    assert r.usage.prompt_tokens == 3


def test_script_is_fifo_then_default_and_reset(
    upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    upstream.script(Answer(text="first"), Answer(text="second reply"))
    replies = [
        client.chat.completions.create(model="m", messages=user("q")).choices[0].message.content
        for _ in range(3)
    ]
    assert replies == ["first", "second reply", "Echo: q"]

    upstream.default = Answer(text="new default")
    upstream.script(HttpError.server_error())
    upstream.reset()
    assert upstream.requests == [] and upstream.pending() == 0
    assert client.chat.completions.create(model="m", messages=user("q")).choices[
        0
    ].message.content == ("new default")
    with pytest.raises(TypeError):
        upstream.script("not a behaviour")  # type: ignore[arg-type]


def test_wrong_key_is_401_and_does_not_consume_the_script(upstream: FakeUpstream) -> None:
    upstream.script(Answer(text="kept"))
    with openai.OpenAI(base_url=upstream.base_url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model="m", messages=user("q"))
        assert info.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    assert upstream.pending() == 1
    assert upstream.requests[0].headers["authorization"] == "Bearer wrong"


def test_models_endpoint(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["fake-model"]


def test_stream_error_event_after_chunks_raises_in_sdk(
    upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    upstream.script(StreamError(after=2, message="boom upstream", code="server_error"))
    got: list[str] = []
    with pytest.raises(openai.APIError, match="boom upstream"):
        for c in client.chat.completions.create(model="m", messages=user("a b c"), stream=True):
            got.append(c.choices[0].delta.content or "")
    assert got == ["", "Echo: ", "a "]
    assert upstream.disconnects == []


TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TWO_CALLS = ToolCalls(
    calls=(("get_weather", '{"city": "Paris"}'), ("get_time", '{"tz": "Europe/Paris"}')),
    text="Let me check.",
)


def test_openai_tool_calls_non_stream(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.script(ToolCalls(), TWO_CALLS)
    r = client.chat.completions.create(
        model="m", messages=user("weather in Paris?"), tools=TOOLS, tool_choice="auto"
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.id == "call_0" and call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 1)
    assert upstream.requests[0].body["tools"] == TOOLS
    assert upstream.requests[0].body["tool_choice"] == "auto"

    r = client.chat.completions.create(model="m", messages=user("q"), tools=TOOLS)
    message = r.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_0", "get_weather", '{"city": "Paris"}'),
        ("call_1", "get_time", '{"tz": "Europe/Paris"}'),
    ]
    assert r.usage is not None and r.usage.completion_tokens == 2 + 3


@pytest.mark.parametrize("behaviour", [ToolCalls(), TWO_CALLS])
def test_openai_tool_calls_stream(
    upstream: FakeUpstream, client: openai.OpenAI, behaviour: ToolCalls
) -> None:
    upstream.script(behaviour)
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=user("q"),
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert upstream.requests[0].body["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ("" if behaviour.text else None)
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-2].choices[0].delta.tool_calls is None
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(behaviour.calls) + (
        len(behaviour.text.split()) if behaviour.text else 0
    )
    deltas = [c.choices[0].delta for c in chunks[1:-2]]
    text = "".join(d.content or "" for d in deltas)
    assert text == (behaviour.text or "")

    # Reassemble the calls the way a client does: by index.
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas:
        if d.tool_calls is None:
            assert d.content
            continue
        [piece] = d.tool_calls
        assert piece.function is not None
        if piece.index not in calls:  # the first chunk of a call: id, type, name
            assert piece.id == f"call_{piece.index}" and piece.type == "function"
            assert piece.function.arguments == ""
            calls[piece.index] = {"name": piece.function.name, "arguments": "", "pieces": 0}
        else:
            assert piece.id is None and piece.type is None and piece.function.name is None
            calls[piece.index]["arguments"] += piece.function.arguments
            calls[piece.index]["pieces"] += 1
    assert [(c["name"], c["arguments"]) for _, c in sorted(calls.items())] == list(behaviour.calls)
    assert all(c["pieces"] == 3 for c in calls.values())


def test_tool_calls_arguments_pieces_on_the_wire(upstream: FakeUpstream) -> None:
    """Raw SSE: the exact OpenAI streaming shape (no usage chunk without include_usage)."""
    upstream.script(ToolCalls(calls=(("f", "{}"),)))
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=5)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=orjson.dumps({"model": "m", "messages": user("q"), "stream": True}),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        raw = resp.read().decode()
    finally:
        conn.close()
    datas = [block.removeprefix("data: ") for block in raw.split("\n\n")[:-1]]
    assert datas[-1] == "[DONE]"
    events = [orjson.loads(d) for d in datas[:-1]]
    assert [e["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": None},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]},
        {},
    ]
    assert [e["choices"][0]["finish_reason"] for e in events] == [None] * 4 + ["tool_calls"]
    assert all("usage" not in e for e in events)


def test_tool_result_is_echoed(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny, 21 C"},
    ]
    r = client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    assert r.choices[0].message.content == "Echo: tool sunny, 21 C"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens == 3 + 3
    streamed = client.chat.completions.create(model="m", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "Echo: tool sunny, 21 C"
    # A user message after the tool result is echoed as before.
    messages.append({"role": "user", "content": "thanks"})
    r = client.chat.completions.create(model="m", messages=messages)
    assert r.choices[0].message.content == "Echo: thanks"


def test_tool_calls_validates_calls() -> None:
    assert ToolCalls(calls=[["f", "{}"]]).calls == (("f", "{}"),)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ToolCalls(calls=(("f",),))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ToolCalls(calls=(("f", {"a": 1}),))  # type: ignore[arg-type]


# ---- raw HTTP: error formats, Anthropic, drops ---------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "status", "oa_type", "an_type", "code", "message_part", "headers"),
    [
        (
            HttpError.context_length_exceeded(),
            400,
            "invalid_request_error",
            "invalid_request_error",
            "context_length_exceeded",
            "maximum context length is 8192",
            {},
        ),
        (
            HttpError.unauthorized(),
            401,
            "invalid_request_error",
            "authentication_error",
            "invalid_api_key",
            "API key",
            {},
        ),
        (
            HttpError.rate_limited(7),
            429,
            "requests",
            "rate_limit_error",
            "rate_limit_exceeded",
            "Rate limit",
            {"Retry-After": "7"},
        ),
        (HttpError.server_error(), 500, "server_error", "api_error", None, "error", {}),
        (HttpError.unavailable(), 503, "server_error", "api_error", None, "overloaded", {}),
    ],
)
async def test_http_errors_in_both_formats(
    upstream: FakeUpstream,
    behaviour: HttpError,
    status: int,
    oa_type: str,
    an_type: str,
    code: str | None,
    message_part: str,
    headers: dict[str, str],
) -> None:
    upstream.script(behaviour, behaviour)
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{upstream.base_url}/chat/completions",
            json={"model": "m", "messages": user("q")},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as r:
            body = await r.json()
            assert r.status == status
            assert {k: r.headers.get(k) for k in headers} == headers
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == oa_type
        assert body["error"]["code"] == code
        assert message_part in body["error"]["message"]

        async with s.post(
            f"{upstream.root_url}/v1/messages",
            json={"model": "c", "max_tokens": 10, "messages": user("q")},
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        ) as r:
            body = await r.json()
            assert r.status == status
            assert {k: r.headers.get(k) for k in headers} == headers
        assert body == {
            "type": "error",
            "error": {"type": an_type, "message": body["error"]["message"]},
        }
        assert message_part in body["error"]["message"]


async def test_anthropic_stream_event_format(upstream: FakeUpstream) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{upstream.root_url}/v1/messages",
            json={
                "model": "claude-x",
                "max_tokens": 100,
                "stream": True,
                "system": [{"type": "text", "text": "sys prompt here"}],
                "messages": user("hello there"),
            },
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = await sse_events(r)
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["model"] == "claude-x" and start["role"] == "assistant"
    assert start["usage"]["input_tokens"] == 5  # 3 system words + 2 user words
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == "Echo: hello there"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"] == {"output_tokens": 3}
    req = upstream.requests[0]
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["X-Api-Key"] == KEY


async def test_anthropic_non_stream_max_tokens_and_validation(upstream: FakeUpstream) -> None:
    url = f"{upstream.root_url}/v1/messages"
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            url, json={"model": "c", "max_tokens": 2, "messages": user("a b c")}, headers=headers
        ) as r:
            msg = await r.json()
        assert msg["type"] == "message" and msg["role"] == "assistant"
        assert msg["content"] == [{"type": "text", "text": "Echo: a "}]
        assert msg["stop_reason"] == "max_tokens"
        assert msg["usage"] == {"input_tokens": 3, "output_tokens": 2}

        async with s.post(url, json={"model": "c", "messages": user("a")}, headers=headers) as r:
            assert r.status == 400
            err = await r.json()
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in err["error"]["message"]

        async with s.post(
            url, json={"model": "c", "max_tokens": 5, "messages": user("a")}, headers={}
        ) as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "authentication_error"


ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


async def test_anthropic_tool_use_non_stream(upstream: FakeUpstream) -> None:
    upstream.script(ToolCalls(), TWO_CALLS, ToolCalls(calls=(("f", "[1]"),)))
    url = f"{upstream.root_url}/v1/messages"
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    request = {"model": "c", "max_tokens": 1, "messages": user("q"), "tools": tools}
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=request, headers=ANTHROPIC_HEADERS) as r:
            assert r.status == 200
            msg = await r.json()
        assert msg["content"] == [
            {"type": "tool_use", "id": "toolu_0", "name": "get_weather", "input": {"city": "Paris"}}
        ]
        assert msg["stop_reason"] == "tool_use"
        assert msg["usage"] == {"input_tokens": 1, "output_tokens": 1}
        assert upstream.requests[0].body["tools"] == tools

        async with s.post(url, json=request, headers=ANTHROPIC_HEADERS) as r:
            msg = await r.json()
        assert msg["content"] == [
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_0",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_time",
                "input": {"tz": "Europe/Paris"},
            },
        ]
        assert msg["usage"]["output_tokens"] == 5

        async with s.post(url, json=request, headers=ANTHROPIC_HEADERS) as r:
            assert r.status == 500
            err = await r.json()
        assert err["error"]["type"] == "api_error"
        assert "not a JSON object" in err["error"]["message"]


async def test_anthropic_tool_use_stream(upstream: FakeUpstream) -> None:
    upstream.script(TWO_CALLS)
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{upstream.root_url}/v1/messages",
            json={"model": "c", "max_tokens": 9, "messages": user("q"), "stream": True},
            headers=ANTHROPIC_HEADERS,
        ) as r,
    ):
        assert r.status == 200
        events = await sse_events(r)
    assert all(data["type"] == name for name, data in events)
    names = [n for n, _ in events]
    block = ["content_block_start", *["content_block_delta"] * 3, "content_block_stop"]
    end = ["message_delta", "message_stop"]
    assert names == ["message_start", block[0], "ping", *block[1:], *block, *block, *end]
    starts = [d for n, d in events if n == "content_block_start"]
    assert [(d["index"], d["content_block"]) for d in starts] == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "toolu_0", "name": "get_weather", "input": {}}),
        (2, {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}),
    ]
    deltas = [d for n, d in events if n == "content_block_delta"]
    assert [d["delta"]["type"] for d in deltas] == ["text_delta"] * 3 + ["input_json_delta"] * 6
    assert "".join(d["delta"]["text"] for d in deltas[:3]) == "Let me check."
    for index, arguments in ((1, '{"city": "Paris"}'), (2, '{"tz": "Europe/Paris"}')):
        pieces = [d["delta"]["partial_json"] for d in deltas if d["index"] == index]
        assert len(pieces) == 3 and "".join(pieces) == arguments
    assert [d["index"] for n, d in events if n == "content_block_stop"] == [0, 1, 2]
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2][1]["usage"] == {"output_tokens": 5}


def test_anthropic_tool_result_is_echoed_over_http_client(upstream: FakeUpstream) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_0", "name": "w", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_0",
                    "content": [{"type": "text", "text": "rainy"}],
                }
            ],
        },
    ]
    conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=5)
    try:
        conn.request(
            "POST",
            "/v1/messages",
            body=orjson.dumps({"model": "c", "max_tokens": 9, "messages": messages}),
            headers={**ANTHROPIC_HEADERS, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200
        msg = orjson.loads(resp.read())
    finally:
        conn.close()
    assert msg["content"] == [{"type": "text", "text": "Echo: tool rainy"}]
    assert msg["stop_reason"] == "end_turn"


async def test_drop_closes_without_response(upstream: FakeUpstream) -> None:
    upstream.script(Drop(), StreamAbort(after=0))
    async with aiohttp.ClientSession() as s:
        for stream in (False, False):
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await s.post(
                    f"{upstream.base_url}/chat/completions",
                    json={"model": "m", "messages": user("q"), "stream": stream},
                    headers={"Authorization": f"Bearer {KEY}"},
                )
    assert len(upstream.requests) == 2
    assert upstream.disconnects == []  # the fake closed them itself


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_stream_abort_mid_stream(upstream: FakeUpstream, path: str) -> None:
    upstream.script(StreamAbort(after=2))
    received = b""
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            upstream.root_url + path,
            json={"model": "m", "max_tokens": 99, "messages": user("a b c d"), "stream": True},
            headers={"Authorization": f"Bearer {KEY}", "x-api-key": KEY},
        ) as r,
    ):
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in r.content:
                received += line
    assert received.count(b'"Echo: "') == 1
    assert received.count(b'"a "') == 1
    assert b'"b "' not in received
    assert b"[DONE]" not in received and b"message_stop" not in received
    assert upstream.disconnects == []


async def test_anthropic_stream_error_event(upstream: FakeUpstream) -> None:
    upstream.script(StreamError(after=1, message="Overloaded"))
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{upstream.root_url}/v1/messages",
            json={"model": "c", "max_tokens": 9, "messages": user("a b"), "stream": True},
            headers={"x-api-key": KEY},
        ) as r,
    ):
        events = await sse_events(r)
    assert [n for n, _ in events][-2:] == ["content_block_delta", "error"]
    assert events[-1][1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


# ---- disconnect detection -----------------------------------------------------------------


async def test_streaming_client_disconnect_is_noticed_quickly(upstream: FakeUpstream) -> None:
    upstream.script(slow_stream(chunks=200, delay=0.05))
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            f"{upstream.base_url}/chat/completions",
            json={"model": "m", "messages": user("q"), "stream": True},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        for _ in range(4):  # role chunk + 3 words
            await r.content.readuntil(b"\n\n")
        closed_at = time.monotonic()
        r.close()  # drops the connection: the response was not read to the end
        assert await asyncio.to_thread(upstream.wait_for_disconnect, 10.0)
    [d] = upstream.disconnects
    assert d.path == "/v1/chat/completions" and d.stream
    # Noticed long before the 10 s stream would have ended (bounds loose for a loaded machine).
    assert 3 <= d.chunks_sent < 60
    assert closed_at <= d.at < closed_at + 3


@pytest.mark.parametrize(
    ("behaviour", "stream"),
    [(Hang(), False), (Hang(), True), (Answer(first_token_delay=30), False)],
)
def test_silent_handler_notices_disconnect(
    upstream: FakeUpstream, behaviour: Answer | Hang, stream: bool
) -> None:
    """No writes at all: only handler cancellation can notice that the peer went away."""
    upstream.script(behaviour)
    body = orjson.dumps({"model": "m", "messages": user("q"), "stream": stream})
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert upstream.wait_for_requests(1, timeout=10)
        assert upstream.disconnects == []
        closed_at = time.monotonic()
    assert upstream.wait_for_disconnect(10)
    assert upstream.disconnects[0].at >= closed_at  # noticed when the peer went away


def test_completed_responses_are_not_disconnects(
    upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    list(client.chat.completions.create(model="m", messages=user("a b"), stream=True))
    client.chat.completions.create(model="m", messages=user("a b"))
    client.close()
    assert not upstream.wait_for_disconnect(0.2)


async def test_async_context_manager_and_prompt_stop_with_a_hanging_request() -> None:
    up = FakeUpstream()
    async with up:
        up.script(Hang(), Hang())
        async with aiohttp.ClientSession() as s:
            with pytest.raises(asyncio.TimeoutError):
                await s.post(
                    f"{up.base_url}/chat/completions",
                    json={"model": "m", "messages": user("q")},
                    timeout=aiohttp.ClientTimeout(total=0.2),
                )
        assert await asyncio.to_thread(up.wait_for_disconnect, 10.0)
        port = up.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n"
            b'{"messages": []}'
        )
        assert await asyncio.to_thread(up.wait_for_requests, 2, 10.0)
    # Stopping did not wait for the hanging connection (or pytest's timeout would have hit).
    assert await reader.read() == b""  # the server closed the hanging connection
    writer.close()
    await writer.wait_closed()
    assert len(up.disconnects) == 1  # stopping the server is not a client disconnect
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
