"""The endpoint driven by the official `openai` SDK (sync and async, streaming and not) against
the test suite's own upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.e2e.conftest import chat_config, transcripts
from tests.harness import RunningGateway
from tests.openai_spec import conforms
from tests.upstream import Answer, FakeUpstream, ToolCalls


def client(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0, timeout=30)


def test_non_streaming_completion(chat_gateway: RunningGateway, upstream: FakeUpstream) -> None:
    with client(chat_gateway) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="openclaw", messages=[{"role": "user", "content": "hello there"}]
        )
        reply = raw.parse()
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == "openclaw"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "Echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    # The fake counts words: prompt = "hello there", completion = "Echo: hello there".
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2, 3)
    assert reply.usage.total_tokens == 5
    assert raw.headers["x-openclaw-session-key"].startswith("agent:main:openai:")
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert raw.headers["referrer-policy"] == "no-referrer"
    sent = upstream.model_requests[-1]
    assert sent.body["model"] == "fake-model"
    assert sent.headers["authorization"] == "Bearer upstream-key"
    assert sent.body["messages"][-1] == {"role": "user", "content": "hello there"}


def test_streaming_completion_with_usage(chat_gateway: RunningGateway) -> None:
    with client(chat_gateway) as c:
        chunks = list(
            c.chat.completions.create(
                model="openclaw",
                messages=[{"role": "user", "content": "one two three"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Echo: one two three"
    content_chunks = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(content_chunks) == 4  # forwarded as produced, one per upstream delta
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert [f.choices[0].finish_reason for f in finals] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert len({ch.id for ch in chunks}) == 1
    assert len({ch.created for ch in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")


def test_streaming_without_include_usage_has_no_usage_chunk(chat_gateway: RunningGateway) -> None:
    with client(chat_gateway) as c:
        chunks = list(
            c.chat.completions.create(
                model="openclaw", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    assert all(ch.choices for ch in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_client_both_modes(chat_gateway: RunningGateway) -> None:
    async with AsyncOpenAI(
        base_url=chat_gateway.url + "/v1", api_key=chat_gateway.token, max_retries=0
    ) as c:
        reply = await c.chat.completions.create(
            model="openclaw/beta", messages=[{"role": "user", "content": "async"}]
        )
        assert reply.choices[0].message.content == "Echo: async"
        stream = await c.chat.completions.create(
            model="agent:beta", messages=[{"role": "user", "content": "async stream"}], stream=True
        )
        parts = [ch.choices[0].delta.content or "" async for ch in stream if ch.choices]
        assert "".join(parts) == "Echo: async stream"


def test_models_list_and_retrieve(
    chat_gateway: RunningGateway, upstream: FakeUpstream, gateway_factory
) -> None:
    with client(chat_gateway) as c:
        listed = c.models.with_raw_response.list()
        conforms(json.loads(listed.text), "ListModelsResponse")
        ids = [m.id for m in listed.parse()]
        assert ids == ["openclaw", "openclaw/default", "openclaw/main", "openclaw/beta"]
        beta = c.models.with_raw_response.retrieve("openclaw/beta")
        conforms(json.loads(beta.text), "Model")
        assert beta.parse().owned_by == "openclaw"
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("openclaw/nope")
    headers = chat_gateway.auth_headers()
    # The id is URL-decoded; a malformed one is a 400.
    res = httpx.get(chat_gateway.url + "/v1/models/openclaw%2Fbeta", headers=headers)
    assert res.status_code == 200 and res.json()["id"] == "openclaw/beta"
    res = httpx.get(chat_gateway.url + "/v1/models/openclaw%00x", headers=headers)
    assert res.status_code == 400 and res.json()["error"]["param"] == "model"
    # `created` is the same after a restart.
    created = json.loads(beta.text)["created"]
    chat_gateway.stop()
    again = gateway_factory(chat_config(upstream))
    with client(again) as c:
        assert c.models.retrieve("openclaw/beta").created == created


def test_unknown_agent_is_404_model_not_found(chat_gateway: RunningGateway) -> None:
    with client(chat_gateway) as c, pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(
            model="openclaw:ghost", messages=[{"role": "user", "content": "x"}]
        )
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found"
    assert body["type"] == "invalid_request_error"
    assert "main" in body["message"]


def test_invalid_model_names_the_accepted_forms(chat_gateway: RunningGateway) -> None:
    with client(chat_gateway) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert "openclaw:<agentId>" in str(info.value)
    assert info.value.body["param"] == "model"  # type: ignore[index]


def test_agent_precedence_header_over_model(chat_gateway: RunningGateway) -> None:
    with client(chat_gateway) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="openclaw:main",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-openclaw-agent-id": "beta"},
        )
        assert raw.headers["x-openclaw-session-key"].startswith("agent:beta:openai:")
        raw = c.chat.completions.with_raw_response.create(
            model="openclaw:beta", messages=[{"role": "user", "content": "x"}]
        )
        assert raw.headers["x-openclaw-session-key"].startswith("agent:beta:openai:")
        # The agent inside an explicit session key is the one that runs.
        raw = c.chat.completions.with_raw_response.create(
            model="openclaw:main",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={
                "x-openclaw-agent-id": "main",
                "x-openclaw-session-key": "agent:beta:s1",
            },
        )
        assert raw.headers["x-openclaw-session-key"] == "agent:beta:s1"
        # A bare key is scoped to the chosen agent.
        raw = c.chat.completions.with_raw_response.create(
            model="openclaw",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-openclaw-session-key": "my-chat"},
        )
        assert raw.headers["x-openclaw-session-key"] == "agent:main:my-chat"


def test_stateless_by_default_each_request_new_session(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    with client(chat_gateway) as c:
        keys = set()
        for word in ("first", "second"):
            raw = c.chat.completions.with_raw_response.create(
                model="openclaw", messages=[{"role": "user", "content": word}]
            )
            keys.add(raw.headers["x-openclaw-session-key"])
    assert len(keys) == 2
    assert [len(r.body["messages"]) for r in upstream.model_requests] == [1, 1]


def test_user_gives_a_stable_session_and_history_is_not_doubled(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    convo = [{"role": "user", "content": "my name is Ada"}]
    with client(chat_gateway) as c:
        raw = c.chat.completions.with_raw_response.create(
            model="openclaw", messages=convo, user="ada@example.com"
        )
        assert raw.headers["x-openclaw-session-key"] == "agent:main:openai-user:ada@example.com"
        first = raw.parse().choices[0].message.content
        # An OpenAI client resends the whole conversation.
        convo += [
            {"role": "assistant", "content": first},
            {"role": "user", "content": "what is my name"},
        ]
        c.chat.completions.create(model="openclaw", messages=convo, user="ada@example.com")
        # A client that sends only the new turn gets the stored history too.
        c.chat.completions.create(
            model="openclaw",
            messages=[{"role": "user", "content": "again"}],
            user="ada@example.com",
        )
    second, third = upstream.model_requests[1].body, upstream.model_requests[2].body
    assert [m["content"] for m in second["messages"]] == [
        "my name is Ada",
        "Echo: my name is Ada",
        "what is my name",
    ]
    assert [m["content"] for m in third["messages"]] == [
        "my name is Ada",
        "Echo: my name is Ada",
        "what is my name",
        "Echo: what is my name",
        "again",
    ]
    [records] = [
        t for t in transcripts(chat_gateway.state_dir) if len(t) >= 6
    ]  # stored before the reply
    assert [r["role"] for r in records] == ["user", "assistant"] * 3
    assert records[1]["usage"]["completion_tokens"] == 5
    assert records[1]["stopReason"] == "stop"


def test_edited_history_uses_the_clients_version_once(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    with client(chat_gateway) as c:
        c.chat.completions.create(
            model="openclaw", messages=[{"role": "user", "content": "original"}], user="ed"
        )
        edited = [
            {"role": "user", "content": "edited question"},
            {"role": "assistant", "content": "edited answer"},
            {"role": "user", "content": "next"},
        ]
        c.chat.completions.create(model="openclaw", messages=edited, user="ed")
        c.chat.completions.create(
            model="openclaw",
            messages=[
                *edited,
                {"role": "assistant", "content": "Echo: next"},
                {"role": "user", "content": "more"},
            ],
            user="ed",
        )
    second = [m["content"] for m in upstream.model_requests[1].body["messages"]]
    assert second == ["edited question", "edited answer", "next"]
    third = [m["content"] for m in upstream.model_requests[2].body["messages"]]
    assert third == ["edited question", "edited answer", "next", "Echo: next", "more"]
    [records] = [
        t for t in transcripts(chat_gateway.state_dir) if len(t) >= 7
    ]  # stored before the reply
    resets = [r for r in records if (r.get("meta") or {}).get("type") == "history-reset"]
    assert len(resets) == 1


def test_regenerated_last_turn_is_not_doubled(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    with client(chat_gateway) as c:
        c.chat.completions.create(
            model="openclaw", messages=[{"role": "user", "content": "q1"}], user="r"
        )
        # Regenerate: the same conversation again; the stored answer must not appear twice.
        c.chat.completions.create(
            model="openclaw", messages=[{"role": "user", "content": "q1"}], user="r"
        )
        convo = [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "Echo: q1"},
            {"role": "user", "content": "q2"},
        ]
        c.chat.completions.create(model="openclaw", messages=convo, user="r")
        c.chat.completions.create(model="openclaw", messages=convo, user="r")
        convo += [{"role": "assistant", "content": "Echo: q2"}, {"role": "user", "content": "q3"}]
        c.chat.completions.create(model="openclaw", messages=convo, user="r")
    assert [m["content"] for m in upstream.model_requests[1].body["messages"]] == ["q1"]
    for i in (2, 3):
        assert [m["content"] for m in upstream.model_requests[i].body["messages"]] == [
            "q1",
            "Echo: q1",
            "q2",
        ]
    assert [m["content"] for m in upstream.model_requests[4].body["messages"]] == [
        "q1",
        "Echo: q1",
        "q2",
        "Echo: q2",
        "q3",
    ]


def test_system_and_developer_messages_become_the_system_prompt(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    with client(chat_gateway) as c:
        c.chat.completions.create(
            model="openclaw",
            messages=[
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": "Speak French."},
                {"role": "user", "content": "hi"},
            ],
        )
    msgs = upstream.model_requests[-1].body["messages"]
    assert msgs[0]["role"] == "system"
    assert msgs[0]["content"].endswith("Be terse.\n\nSpeak French.")
    assert msgs[1:] == [{"role": "user", "content": "hi"}]


def test_earlier_turns_go_as_real_chat_turns(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    with client(chat_gateway) as c:
        c.chat.completions.create(
            model="openclaw",
            messages=[
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ],
        )
    assert upstream.model_requests[-1].body["messages"] == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]


def test_sampling_fields_pass_through_and_max_tokens_unified(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    with client(chat_gateway) as c:
        reply = c.chat.completions.create(
            model="openclaw",
            messages=[{"role": "user", "content": "a b c d e f"}],
            temperature=0.3,
            top_p=0.9,
            max_completion_tokens=2,
            stop=["zzz"],
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            response_format={"type": "text"},
            extra_body={"some_unknown_field": 1},
        )
    body = upstream.model_requests[-1].body
    assert body["max_tokens"] == 2
    assert "max_completion_tokens" not in body
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.3, 0.9, 7)
    assert body["stop"] == ["zzz"]
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, -0.5)
    assert body["response_format"] == {"type": "text"}
    assert "some_unknown_field" not in body
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "Echo: a "


def test_usage_counted_when_upstream_reports_none(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    upstream.default = Answer(no_usage=True)
    with client(chat_gateway) as c:
        reply = c.chat.completions.create(
            model="openclaw", messages=[{"role": "user", "content": "count me please"}], user="u"
        )
        chunks = list(
            c.chat.completions.create(
                model="openclaw",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    records = [
        r for t in transcripts(chat_gateway.state_dir) for r in t if r["role"] == "assistant"
    ]  # stored before the reply
    assert any((r.get("meta") or {}).get("usageEstimated") for r in records)


def test_answers_conform_to_openais_schemas(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    """Every shape chat completions answer with, against OpenAI's published schemas."""
    headers = {**chat_gateway.auth_headers(), "x-openclaw-tool-events": "1"}
    url = chat_gateway.url + "/v1/chat/completions"
    messages = [{"role": "user", "content": "hello schema"}]
    reply = httpx.post(url, json={"model": "openclaw", "messages": messages}, headers=headers)
    conforms(reply.json(), "CreateChatCompletionResponse")
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    upstream.script(ToolCalls(calls=(("get_weather", '{"city": "Oslo"}'),)))
    calls = httpx.post(
        url, json={"model": "openclaw", "messages": messages, "tools": [weather]}, headers=headers
    )
    conforms(calls.json(), "CreateChatCompletionResponse")
    body = {
        "model": "openclaw",
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stream = httpx.post(url, json=body, headers=headers)
    chunks = [
        json.loads(line[6:])
        for line in stream.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    assert len(chunks) > 3
    for chunk in chunks:
        conforms(chunk, "CreateChatCompletionStreamResponse")
    error = httpx.post(url, json={"model": "openclaw", "messages": []}, headers=headers)
    assert error.status_code == 400
    conforms(error.json(), "ErrorResponse")
