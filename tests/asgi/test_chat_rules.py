"""Chat completions' request rules, in process: routing, auth, validation with ``param``, and
which agent and session a request runs in."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.asgi.conftest import AUTH, App
from tests.e2e.conftest import chat_config, transcripts
from tests.upstream import FakeUpstream

PATH = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


async def post(
    client: httpx.AsyncClient, body: Any, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(
        PATH, content=data, headers={"Content-Type": "application/json", **AUTH, **(headers or {})}
    )


def error_of(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    err: dict[str, Any] = reply.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


async def test_a_disabled_endpoint_and_unknown_paths_are_404_json(app: App) -> None:
    client = await app()
    for path in (PATH, "/v1/nothing", "/nothing"):
        err = error_of(await client.post(path, content=b"{}", headers=AUTH), 404)
        assert err["type"] == "invalid_request_error"
    # "/" is the control page: it exists, for GET and HEAD only.
    reply = await client.post("/", content=b"{}", headers=AUTH)
    assert error_of(reply, 405)["code"] == "method_not_allowed"
    assert set(reply.headers["allow"].split(", ")) == {"GET", "HEAD"}


async def test_wrong_method_is_405_before_auth(chat: httpx.AsyncClient) -> None:
    reply = await chat.get(PATH)
    assert error_of(reply, 405)["code"] == "method_not_allowed"
    assert reply.headers["allow"] == "POST"


async def test_auth_required(chat: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        reply = await chat.post(PATH, content=b"{}", headers=headers)
        assert error_of(reply, 401)["code"] == "invalid_api_key"
        assert reply.headers["www-authenticate"] == "Bearer"
    assert error_of(await chat.get("/v1/models"), 401)["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "param", "contains"),
    [
        (b"{not json", None, "could not parse the JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'"text"', None, "must be a JSON object"),
        ({"messages": USER}, "model", "model"),
        ({"model": "openclaw"}, "messages", "messages"),
        ({"model": "openclaw", "messages": []}, "messages", "non-empty array"),
        ({"model": "openclaw", "messages": "hi"}, "messages", "non-empty array"),
        (
            {"model": "openclaw", "messages": [{"role": "bot", "content": "x"}]},
            "messages[0].role",
            "role",
        ),
        (
            {"model": "openclaw", "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            "content",
        ),
        (
            {"model": "openclaw", "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
            "messages[0].content[0]",
            "audio",
        ),
        (
            {"model": "openclaw", "messages": USER, "temperature": 2.5},
            "temperature",
            "`temperature` must be between 0 and 2.",
        ),
        ({"model": "openclaw", "messages": USER, "temperature": "1"}, "temperature", "number"),
        (
            {"model": "openclaw", "messages": USER, "top_p": 1.5},
            "top_p",
            "`top_p` must be between 0 and 1.",
        ),
        (
            {"model": "openclaw", "messages": USER, "presence_penalty": -3},
            "presence_penalty",
            "between -2 and 2",
        ),
        (
            {"model": "openclaw", "messages": USER, "frequency_penalty": 2.1},
            "frequency_penalty",
            "between -2 and 2",
        ),
        (
            {"model": "openclaw", "messages": USER, "stop": ["a", "b", "c", "d", "e"]},
            "stop",
            "at most 4",
        ),
        ({"model": "openclaw", "messages": USER, "stop": [""]}, "stop", "non-empty"),
        ({"model": "openclaw", "messages": USER, "seed": 1.5}, "seed", "integer"),
        ({"model": "openclaw", "messages": USER, "stream": "false"}, "stream", "boolean"),
        ({"model": "openclaw", "messages": USER, "n": 2}, "n", "n=1"),
        (
            {"model": "openclaw", "messages": USER, "max_tokens": 0},
            "max_tokens",
            "from 1 to 2147483647",
        ),
        ({"model": "gpt-4", "messages": USER}, "model", "openclaw/<agentId>"),
        (
            {"model": "openclaw", "messages": [{"role": "system", "content": "only system"}]},
            "messages",
            "Missing user message in `messages`.",
        ),
        (
            {"model": "openclaw", "messages": [{"role": "assistant", "content": "only me"}]},
            "messages",
            "Missing user message in `messages`.",
        ),
    ],
)
async def test_bad_requests_are_400_naming_the_field(
    chat: httpx.AsyncClient, upstream: FakeUpstream, body: Any, param: str | None, contains: str
) -> None:
    err = error_of(await post(chat, body), 400)
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param
    assert contains in err["message"]
    assert upstream.model_requests == []


async def test_an_empty_user_message_is_400(chat: httpx.AsyncClient) -> None:
    for content in (None, "", []):
        body = {"model": "openclaw", "messages": [{"role": "user", "content": content}]}
        assert error_of(await post(chat, body), 400)["param"] == "messages"


@pytest.mark.parametrize(
    ("model", "headers", "agent"),
    [
        ("openclaw", {}, "main"),
        ("openclaw/default", {}, "main"),
        ("openclaw/beta", {}, "beta"),
        ("openclaw:beta", {}, "beta"),
        ("agent:beta", {}, "beta"),
        ("openclaw/beta", {"x-openclaw-agent-id": "main"}, "main"),  # the header wins
        ("openclaw", {"x-openclaw-session-key": "agent:beta:x"}, "beta"),  # the key's agent wins
    ],
)
async def test_which_agent_runs(
    chat: httpx.AsyncClient, model: str, headers: dict[str, str], agent: str
) -> None:
    reply = await post(chat, {"model": model, "messages": USER}, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-openclaw-session-key"].startswith(f"agent:{agent}:")


async def test_which_session_a_request_runs_in(chat: httpx.AsyncClient) -> None:
    first = await post(chat, {"model": "openclaw", "messages": USER})
    second = await post(chat, {"model": "openclaw", "messages": USER})
    keys = [r.headers["x-openclaw-session-key"] for r in (first, second)]
    assert all(k.startswith("agent:main:openai:") for k in keys) and keys[0] != keys[1]
    user = await post(chat, {"model": "openclaw", "messages": USER, "user": "Alice B"})
    assert user.headers["x-openclaw-session-key"].startswith("agent:main:openai-user:Alice-B~")
    named = await post(
        chat,
        {"model": "openclaw", "messages": USER, "user": "x"},
        headers={"x-openclaw-session-key": "desk"},
    )
    assert named.headers["x-openclaw-session-key"] == "agent:main:desk"  # the key beats `user`


@pytest.mark.parametrize(
    ("headers", "model", "status", "param"),
    [
        ({"x-openclaw-agent-id": "nobody"}, "openclaw", 404, "model"),
        ({}, "openclaw/nobody", 404, "model"),
        ({"x-openclaw-session-key": "agent:nobody:x"}, "openclaw", 404, "model"),
        ({"x-openclaw-session-key": "agent:Main:x"}, "openclaw", 400, "x-openclaw-session-key"),
        ({"x-openclaw-session-key": "x" * 600}, "openclaw", 400, "x-openclaw-session-key"),
    ],
)
async def test_unknown_agents_and_bad_session_keys(
    chat: httpx.AsyncClient,
    upstream: FakeUpstream,
    headers: dict[str, str],
    model: str,
    status: int,
    param: str,
) -> None:
    err = error_of(await post(chat, {"model": model, "messages": USER}, headers=headers), status)
    assert err["param"] == param
    assert upstream.model_requests == []


async def test_tool_choice_must_be_one_openai_knows(chat: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {"model": "openclaw", "messages": USER, "tools": tools}
    bad = await post(chat, {**body, "tool_choice": {"type": "function"}})
    assert error_of(bad, 400)["param"] == "tool_choice"
    named = {"type": "function", "function": {"name": "f"}}
    assert (await post(chat, {**body, "tool_choice": named})).status_code == 200


async def test_a_run_in_process_is_stored_before_the_reply(
    app: App, upstream: FakeUpstream, tmp_path: Any
) -> None:
    client = await app(chat_config(upstream))
    reply = await post(client, {"model": "openclaw", "messages": USER, "user": "u"})
    assert reply.json()["choices"][0]["message"]["content"] == "Echo: hi"
    [records] = transcripts(tmp_path / "state")
    assert [(r["role"], r["content"]) for r in records] == [
        ("user", "hi"),
        ("assistant", "Echo: hi"),
    ]


@pytest.mark.parametrize("path", [PATH, "/v1/responses"])
async def test_streams_escape_unicode_line_separators(
    app: App, upstream: FakeUpstream, path: str
) -> None:
    """U+0085, U+2028 and U+2029 in the model's text stay inside their SSE line for clients that
    split lines as ``str.splitlines`` does."""
    config = chat_config(upstream)
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    client = await app(config)
    text = "a\u2028b \u2029c \u0085d"
    body: dict[str, Any] = {"model": "openclaw", "stream": True}
    if path == PATH:
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["input"] = text
    reply = await client.post(path, json=body, headers=AUTH)
    assert reply.status_code == 200
    assert "\u2028" not in reply.text and "\u2029" not in reply.text and "\u0085" not in reply.text
    payloads = [
        line[len("data: ") :]
        for line in reply.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    events = [orjson.loads(p) for p in payloads]  # every line is whole JSON
    if path == PATH:
        streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    else:
        streamed = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert streamed == "Echo: " + text
