"""Provider adapters against the suite's upstream: the Anthropic Messages API, and the offline
local model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from openclaw.config.schema import ProviderConfig
from openclaw.errors import UpstreamRateLimitError
from openclaw.messages import ChatMessage, TextDelta, Usage
from openclaw.providers.base import Finished, ModelRequest, SamplingParams
from openclaw.providers.local_gguf import LocalGgufProvider, render_prompt
from tests.upstream import Answer, FakeUpstream, HttpError, StreamError


def anthropic_config(up: FakeUpstream) -> dict:
    return {
        "gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": True}}}},
        "models": {
            "providers": {
                "claude": {
                    "api": "anthropic-messages",
                    "baseUrl": up.root_url,
                    "apiKey": "sk-ant-test",
                    "maxRetries": 0,
                    "models": [{"id": "claude-test", "maxTokens": 333}],
                }
            }
        },
        "agents": {"defaults": {"model": "claude/claude-test"}},
        "tools": {"profile": "minimal"},
    }


def test_anthropic_provider_streaming_and_not(gateway_factory) -> None:
    with FakeUpstream(api_key="sk-ant-test") as up:
        gw = gateway_factory(anthropic_config(up))
        with OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0) as c:
            reply = c.chat.completions.create(
                model="openclaw",
                messages=[
                    {"role": "system", "content": "sys one"},
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "answer"},
                    {"role": "user", "content": "hello claude"},
                ],
            )
            assert reply.choices[0].message.content == "Echo: hello claude"
            assert reply.usage is not None and reply.usage.completion_tokens == 3
            chunks = list(
                c.chat.completions.create(
                    model="openclaw",
                    messages=[{"role": "user", "content": "stream me"}],
                    stream=True,
                    stream_options={"include_usage": True},
                    max_tokens=2,
                )
            )
        body = up.model_requests[0].body
        headers = up.model_requests[0].headers
        assert headers["x-api-key"] == "sk-ant-test"
        assert headers["anthropic-version"] == "2023-06-01"
        assert body["system"].endswith("sys one")
        assert body["max_tokens"] == 333
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == "Echo: stream "
        finish = [
            ch.choices[0].finish_reason
            for ch in chunks
            if ch.choices and ch.choices[0].finish_reason
        ]
        assert finish == ["length"]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_anthropic_errors_map_like_every_provider(gateway_factory) -> None:
    with FakeUpstream() as up:
        gw = gateway_factory(anthropic_config(up))
        with OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0) as c:
            up.script(HttpError.rate_limited(retry_after=20))
            with pytest.raises(openai.RateLimitError) as info:
                c.chat.completions.create(
                    model="openclaw", messages=[{"role": "user", "content": "x"}]
                )
            assert info.value.response.headers["retry-after"] == "20"
            up.script(HttpError.overloaded())
            with pytest.raises(openai.APIStatusError) as err:
                c.chat.completions.create(
                    model="openclaw", messages=[{"role": "user", "content": "x"}]
                )
            assert err.value.status_code == 502
            up.script(StreamError(after=1, message="overloaded mid-way"))
            chunks = c.chat.completions.create(
                model="openclaw", messages=[{"role": "user", "content": "a b c"}], stream=True
            )
            with pytest.raises(openai.APIError) as mid:
                list(chunks)
            assert "overloaded mid-way" in str(mid.value)


async def test_anthropic_rate_limit_is_typed(tmp_path: Path) -> None:
    from openclaw.providers.anthropic import AnthropicProvider

    async with FakeUpstream() as up:
        up.script(HttpError.rate_limited(retry_after=3))
        provider = AnthropicProvider(
            "claude", ProviderConfig(api="anthropic-messages", base_url=up.root_url)
        )
        try:
            with pytest.raises(UpstreamRateLimitError) as info:
                async for _ in provider.stream(ModelRequest("m", [ChatMessage("user", "x")])):
                    pass
            assert info.value.retry_after == 3
        finally:
            await provider.aclose()


def test_render_prompt_is_a_plain_transcript() -> None:
    prompt = render_prompt(
        [
            ChatMessage("system", "You are Claw."),
            ChatMessage("user", "hi\n\nthere"),
            ChatMessage("assistant", "hello"),
            ChatMessage("user", "bye"),
        ]
    )
    assert prompt.endswith("User: hi\nthere\nAssistant: hello\nUser: bye\nAssistant:")
    assert "You are Claw." in prompt
    assert "\n\nUser: hi" not in prompt.split("You are Claw.")[1][:3]


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("local")
    return LocalGgufProvider("local", ProviderConfig(api="local-gguf", context_size=1024), state)


async def test_offline_model_answers_with_real_generated_text(local_model) -> None:
    provider = local_model
    try:
        events = [
            e
            async for e in provider.stream(
                ModelRequest(
                    "gemma-3-270m", [ChatMessage("user", "What is the capital of France?")]
                )
            )
        ]
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        usage = next(e for e in events if isinstance(e, Usage))
        assert "Paris" in text
        assert usage.prompt_tokens > 20 and usage.completion_tokens > 0
        assert not usage.estimated
        assert isinstance(events[-1], Finished)
        # max_tokens is honoured with finish "length"
        short = [
            e
            async for e in provider.stream(
                ModelRequest(
                    "gemma-3-270m",
                    [ChatMessage("user", "Write a long story about a dragon.")],
                    SamplingParams(max_tokens=3),
                )
            )
        ]
        assert next(e for e in short if isinstance(e, Usage)).completion_tokens <= 3
        assert short[-1] == Finished("length")
    finally:
        await provider.aclose()


async def test_offline_model_cancellation_and_queueing(tmp_path: Path) -> None:
    provider = LocalGgufProvider(
        "local", ProviderConfig(api="local-gguf", context_size=1024), tmp_path
    )
    try:
        request = ModelRequest(
            "gemma-3-270m",
            [ChatMessage("user", "Count from one to one hundred, in words.")],
            SamplingParams(max_tokens=200, stop=("zzz",)),
        )

        async def first_tokens() -> float:
            gen = provider.stream(request)
            async for _ in gen:
                break
            closed = time.monotonic()
            await gen.aclose()
            return closed

        await first_tokens()
        # After a cancel the model is free again: a second run is not stuck behind it.
        events = [
            e
            async for e in provider.stream(
                ModelRequest(
                    "gemma-3-270m", [ChatMessage("user", "Say hi.")], SamplingParams(max_tokens=5)
                )
            )
        ]
        assert isinstance(events[-1], Finished)
        # Concurrent requests queue for the model rather than crash.
        results = await asyncio.gather(
            *(
                _collect(
                    provider,
                    ModelRequest(
                        "gemma-3-270m", [ChatMessage("user", q)], SamplingParams(max_tokens=8)
                    ),
                )
                for q in ("Name a color.", "Name an animal.")
            )
        )
        assert all(r for r in results)
    finally:
        await provider.aclose()


async def _collect(provider: LocalGgufProvider, request: ModelRequest) -> str:
    return "".join([e.text async for e in provider.stream(request) if isinstance(e, TextDelta)])


def test_anthropic_tool_calls_both_ways(gateway_factory) -> None:
    from tests.upstream import ToolCalls

    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
    with FakeUpstream() as up:
        gw = gateway_factory(anthropic_config(up))
        up.script(ToolCalls(calls=(("get_weather", '{"city": "Rome"}'),)), ToolCalls())
        with OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0) as c:
            reply = c.chat.completions.create(
                model="openclaw",
                messages=[{"role": "user", "content": "weather?"}],
                tools=[weather],
                tool_choice="required",
            )
            [call] = reply.choices[0].message.tool_calls or []
            assert call.function.name == "get_weather"
            assert call.function.arguments == '{"city": "Rome"}'
            assert reply.choices[0].finish_reason == "tool_calls"
            chunks = list(
                c.chat.completions.create(
                    model="openclaw",
                    messages=[{"role": "user", "content": "again"}],
                    tools=[weather],
                    stream=True,
                )
            )
            args = "".join(
                tc.function.arguments or ""
                for ch in chunks
                if ch.choices
                for tc in ch.choices[0].delta.tool_calls or []
                if tc.function
            )
            assert args == '{"city": "Paris"}'
            final = c.chat.completions.create(
                model="openclaw",
                messages=[
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                    {"role": "tool", "tool_call_id": call.id, "content": "hot"},
                ],
                tools=[weather],
            )
            assert final.choices[0].message.content == "Echo: tool hot"
        first = up.model_requests[0].body
        assert first["tools"] == [{"name": "get_weather", "input_schema": {"type": "object"}}]
        assert first["tool_choice"] == {"type": "any"}
        last = up.model_requests[-1].body["messages"]
        assert last[1]["content"][-1] == {
            "type": "tool_use",
            "id": call.id,
            "name": "get_weather",
            "input": {"city": "Rome"},
        }
        assert last[2]["content"][0]["type"] == "tool_result"
        assert last[2]["content"][0]["tool_use_id"] == call.id


def test_anthropic_cache_reads_count_as_cached_prompt_tokens(gateway_factory) -> None:
    with FakeUpstream(api_key="sk-ant-test") as up:
        gw = gateway_factory(anthropic_config(up))
        up.script(Answer(cached_tokens=5))
        with OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0) as c:
            reply = c.chat.completions.create(
                model="openclaw", messages=[{"role": "user", "content": "one two"}]
            )
    usage = reply.usage
    assert usage is not None
    # OpenAI counts cache reads in the prompt; Anthropic reports them apart.
    assert usage.prompt_tokens == 2 + 5
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 5
