"""Client tools through the endpoint: definitions reach the model, tool calls come back in both
modes, the tool result goes back as a real tool turn, and models without tools say so."""

from __future__ import annotations

import json

import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import chat_config, transcripts
from tests.harness import RunningGateway
from tests.upstream import FakeUpstream, ToolCalls

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def client(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0)


def test_tool_call_round_trip(chat_gateway: RunningGateway, upstream: FakeUpstream) -> None:
    upstream.script(ToolCalls(calls=(("get_weather", '{"city": "Paris"}'),)))
    messages: list[dict] = [{"role": "user", "content": "weather in Paris?"}]
    with client(chat_gateway) as c:
        reply = c.chat.completions.create(
            model="openclaw", messages=messages, tools=[WEATHER], tool_choice="auto", user="tooly"
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        [call] = choice.message.tool_calls or []
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        sent = upstream.model_requests[-1].body
        assert sent["tools"] == [WEATHER]
        assert sent["tool_choice"] == "auto"
        # The client runs the tool and sends the result back.
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
        ]
        final = c.chat.completions.create(
            model="openclaw", messages=messages, tools=[WEATHER], user="tooly"
        )
    assert final.choices[0].message.content == "Echo: tool 18 C and sunny"
    second = upstream.model_requests[-1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool"]
    assert second[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert second[2]["tool_call_id"] == call.id
    [records] = [
        t for t in transcripts(chat_gateway.state_dir) if len(t) >= 4
    ]  # stored before the reply
    assert records[1]["meta"]["toolCalls"][0]["function"]["name"] == "get_weather"
    assert records[2]["role"] == "tool"


def test_streamed_tool_calls(chat_gateway: RunningGateway, upstream: FakeUpstream) -> None:
    upstream.script(
        ToolCalls(calls=(("get_weather", '{"city": "Oslo"}'), ("get_time", '{"tz": "CET"}')))
    )
    with client(chat_gateway) as c:
        chunks = list(
            c.chat.completions.create(
                model="openclaw",
                messages=[{"role": "user", "content": "two tools"}],
                tools=[WEATHER, TIME],
                stream=True,
            )
        )
    calls: dict[int, dict] = {}
    for ch in chunks:
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            entry = calls.setdefault(tc.index, {"name": "", "args": "", "id": None})
            if tc.id:
                entry["id"] = tc.id
            if tc.function and tc.function.name:
                entry["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                entry["args"] += tc.function.arguments
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["args"]) == {"city": "Oslo"}
    assert json.loads(calls[1]["args"]) == {"tz": "CET"}
    assert all(calls[i]["id"] for i in calls)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_models_without_tools_refuse_them(gateway_factory, upstream: FakeUpstream) -> None:
    cfg = chat_config(upstream)
    cfg["agents"]["defaults"]["model"] = "local/gemma-3-270m"
    gw = gateway_factory(cfg)
    with client(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(
            model="openclaw", messages=[{"role": "user", "content": "x"}], tools=[WEATHER]
        )
    assert "cannot call client tools" in str(info.value)


def test_bad_tool_definitions_are_400(chat_gateway: RunningGateway) -> None:
    with client(chat_gateway) as c, pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(
            model="openclaw",
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"description": "no name"}}],  # type: ignore[list-item]
        )
    assert info.value.body["param"].startswith("tools")  # type: ignore[index]


def test_parallel_tool_results_are_stored_whole(
    chat_gateway: RunningGateway, upstream: FakeUpstream
) -> None:
    upstream.script(
        ToolCalls(calls=(("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}')))
    )
    convo: list[dict] = [{"role": "user", "content": "weather in Paris and Rome?"}]
    with client(chat_gateway) as c:
        reply = c.chat.completions.create(
            model="openclaw", messages=convo, tools=[WEATHER], user="par"
        )
        calls = reply.choices[0].message.tool_calls or []
        assert len(calls) == 2
        convo += [
            {"role": "assistant", "content": None, "tool_calls": [x.model_dump() for x in calls]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny 20C"},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "rain 15C"},
        ]
        answer = c.chat.completions.create(
            model="openclaw", messages=convo, tools=[WEATHER], user="par"
        )
        convo.append({"role": "assistant", "content": answer.choices[0].message.content})
        # The client now sends only its next question; the stored history must be complete.
        c.chat.completions.create(
            model="openclaw",
            messages=[{"role": "user", "content": "thanks"}],
            tools=[WEATHER],
            user="par",
        )
    second = upstream.model_requests[1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool", "tool"]
    last = upstream.model_requests[2].body["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "tool", "assistant", "user"]
    assert [m.get("content") for m in last if m["role"] == "tool"] == ["sunny 20C", "rain 15C"]
    assert [c["id"] for c in last[1]["tool_calls"]] == [calls[0].id, calls[1].id]
    records = transcripts(chat_gateway.state_dir)[0]
    assert not any((r.get("meta") or {}).get("type") == "history-reset" for r in records)
