"""The Responses API with the official SDK over real sockets: plain and streamed responses,
instructions, image and file inputs, function tools through a full round trip, stored
responses continued with ``previous_response_id`` (across a restart), retrieved, listed and
deleted, scoped to their caller and agent; every answer checked against OpenAI's own schema."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.documents import pdf
from tests.e2e.conftest import chat_config
from tests.harness import RunningGateway
from tests.openai_spec import conforms
from tests.upstream import Answer, FakeUpstream, HttpError, StreamError, ToolCalls, slow_stream

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def responses_config(up: FakeUpstream, **endpoint: Any) -> dict[str, Any]:
    cfg = chat_config(up)
    cfg["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True, **endpoint}
    return cfg


@pytest.fixture
def gw(upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]) -> RunningGateway:
    return gateway_factory(responses_config(upstream))


def client(gw: RunningGateway, token: str | None = None) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=token or gw.token, max_retries=0)


def create(c: OpenAI, **kw: Any) -> dict[str, Any]:
    """A response as raw JSON, checked against OpenAI's schema, and as the SDK parses it."""
    raw = c.responses.with_raw_response.create(model=kw.pop("model", "openclaw"), **kw)
    body: dict[str, Any] = json.loads(raw.text)
    conforms(body, "Response")
    parsed = raw.parse()
    assert parsed.id == body["id"]
    body["_text"] = parsed.output_text
    body["_session"] = raw.headers.get("x-openclaw-session-key")
    return body


def test_a_plain_response(gw: RunningGateway, upstream: FakeUpstream) -> None:
    with client(gw) as c:
        body = create(
            c, input="hello there", metadata={"ticket": "42"}, extra_body={"new_sdk_field": 1}
        )
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert body["status"] == "completed" and body["error"] is None
    assert body["model"] == "openclaw"
    assert body["_text"] == "Echo: hello there"
    [message] = body["output"]
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert message["content"][0] == {
        "type": "output_text",
        "text": "Echo: hello there",
        "annotations": [],
        "logprobs": [],
    }
    usage = body["usage"]
    assert usage["output_tokens"] == 3 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert body["metadata"] == {"ticket": "42"} and body["store"] is True
    assert body["_session"].startswith("agent:main:openresponses:")
    assert upstream.model_requests[-1].body["messages"] == [
        {"role": "user", "content": "hello there"}
    ]


def test_instructions_and_developer_messages_are_the_system_prompt(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    with client(gw) as c:
        body = create(
            c,
            instructions="Be brief.",
            input=[
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "un"}]},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "two"}],
                },
            ],
        )
    assert body["instructions"] == "Be brief."
    sent = upstream.model_requests[-1].body["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief.\n\nAnswer in French."}
    assert sent[1:] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "un"},
        {"role": "user", "content": "two"},
    ]


def test_image_and_file_inputs(gw: RunningGateway, upstream: FakeUpstream) -> None:
    image = "data:image/png;base64," + base64.b64encode(PNG).decode()
    document = base64.b64encode(pdf("Quarterly revenue rose 12 percent.")).decode()
    notes = base64.b64encode(b"# Notes\nThe launch is on Friday.\n").decode()
    with client(gw) as c:
        body = create(
            c,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Summarise these."},
                        {"type": "input_image", "image_url": image},
                        {
                            "type": "input_file",
                            "filename": "report.pdf",
                            "file_data": f"data:application/pdf;base64,{document}",
                        },
                        {"type": "input_file", "filename": "notes.md", "file_data": notes},
                    ],
                }
            ],
        )
    assert body["status"] == "completed"
    [user] = upstream.model_requests[-1].body["messages"]
    texts = [p["text"] for p in user["content"] if p["type"] == "text"]
    assert texts[0] == "Summarise these."
    assert "[File: report.pdf (application/pdf, 1 page)" in texts[1]
    assert "Quarterly revenue rose 12 percent." in texts[1]
    assert "The launch is on Friday." in texts[2] and "notes.md (text/markdown)" in texts[2]
    [img] = [p for p in user["content"] if p["type"] == "image_url"]
    assert img["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (
            {"type": "input_file", "filename": "x.exe", "file_data": "TVqQAAMAAAAEAAAA"},
            "Unsupported file type",
        ),
        ({"type": "input_file", "file_id": "file-123"}, "`file_id` is not supported"),
        ({"type": "input_file", "filename": "a.txt", "file_data": "!!!"}, "not base64"),
        ({"type": "input_file", "file_url": "https://example.com/a.pdf"}, "File URLs are disabled"),
        ({"type": "input_image", "image_url": "data:image/png;base64,AAAA"}, "Invalid input_image"),
    ],
)
def test_bad_files_and_images_are_400(
    gw: RunningGateway, part: dict[str, Any], message: str
) -> None:
    with client(gw) as c, pytest.raises(openai.BadRequestError) as info:
        c.responses.create(
            model="openclaw",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "x"}, part]}],
        )
    assert message in info.value.body["message"]  # type: ignore[index]
    assert info.value.body["param"] == "input"  # type: ignore[index]


@pytest.mark.parametrize("chained", [True, False], ids=["previous_response_id", "stateless"])
def test_function_tools_round_trip(
    gw: RunningGateway, upstream: FakeUpstream, chained: bool
) -> None:
    upstream.script(ToolCalls(calls=(("get_weather", '{"city": "Oslo"}'),), text="Checking."))
    with client(gw) as c:
        first = create(c, input="weather in Oslo?", tools=[WEATHER])
        message, fc = first["output"]
        assert message["content"][0]["text"] == "Checking."
        assert fc["type"] == "function_call" and fc["name"] == "get_weather"
        assert json.loads(fc["arguments"]) == {"city": "Oslo"} and fc["status"] == "completed"
        assert upstream.model_requests[-1].body["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": WEATHER["parameters"],
                },
            }
        ]
        result = {"type": "function_call_output", "call_id": fc["call_id"], "output": "12 C"}
        if chained:
            second = create(c, input=[result], tools=[WEATHER], previous_response_id=first["id"])
        else:
            replay = [{"role": "user", "content": "weather in Oslo?"}, message, fc, result]
            second = create(c, input=replay, tools=[WEATHER])
    assert second["_text"] == "Echo: tool 12 C"
    sent = upstream.model_requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == fc["call_id"]
    assert sent[2] == {"role": "tool", "content": "12 C", "tool_call_id": fc["call_id"]}


def test_streamed_events_in_order_build_the_stored_response(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    upstream.script(ToolCalls(calls=(("get_weather", '{"city": "Rome"}'),), text="Let me see."))
    body = {"model": "openclaw", "input": "weather?", "tools": [WEATHER], "stream": True}
    raw = httpx.post(gw.url + "/v1/responses", json=body, headers=gw.auth_headers(), timeout=30)
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = _sse(raw.text)
    with client(gw) as c:
        stored = c.responses.retrieve(events[-1]["response"]["id"])
    assert "[DONE]" not in raw.text
    for event in events:
        conforms(event, "ResponseStreamEvent")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds.index("response.output_text.done") < kinds.index(
        "response.function_call_arguments.delta"
    )
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    arguments = "".join(
        e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
    )
    final = events[-1]["response"]
    assert text == "Let me see." == final["output"][0]["content"][0]["text"]
    assert json.loads(arguments) == {"city": "Rome"} == json.loads(final["output"][1]["arguments"])
    assert stored.output_text == text
    assert [o.id for o in stored.output] == [o["id"] for o in final["output"]]


def test_the_sdk_stream_helper(gw: RunningGateway) -> None:
    with client(gw) as c, c.responses.stream(model="openclaw", input="stream me") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Echo: stream me"


def _sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        kind = next(line[7:] for line in lines if line.startswith("event: "))
        data = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
        assert data["type"] == kind
        events.append(data)
    return events


def test_previous_response_id_continues_across_a_restart(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    cfg = responses_config(upstream)
    first_gw = gateway_factory(cfg)
    with client(first_gw) as c:
        first = create(c, input="my name is Ada")
        second = create(c, input="and I like tea", previous_response_id=first["id"])
    assert second["previous_response_id"] == first["id"]
    first_gw.stop()
    again = gateway_factory(cfg)
    with client(again) as c:
        third = create(c, input="who am I?", previous_response_id=second["id"])
        assert c.responses.retrieve(first["id"]).output_text == "Echo: my name is Ada"
    sent = upstream.model_requests[-1].body["messages"]
    # Each earlier turn exactly once, in order.
    assert [m["content"] for m in sent] == [
        "my name is Ada",
        "Echo: my name is Ada",
        "and I like tea",
        "Echo: and I like tea",
        "who am I?",
    ]
    assert third["_session"] == first["_session"] == second["_session"]


def test_stored_responses_retrieve_list_delete(gw: RunningGateway) -> None:
    with client(gw) as c:
        body = create(
            c,
            input=[
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "second"},
            ],
        )
        rid = body["id"]
        got = c.responses.with_raw_response.retrieve(rid)
        assert json.loads(got.text) == {k: v for k, v in body.items() if not k.startswith("_")}
        listed = c.responses.input_items.with_raw_response.list(rid)
        page = json.loads(listed.text)
        conforms(page, "ResponseItemList")
        assert [i["content"][0]["text"] for i in page["data"]] == ["second", "ok", "first"]
        asc = c.responses.input_items.list(rid, order="asc", limit=2)
        assert [i.content[0].text for i in asc.data] == ["first", "ok"]  # type: ignore[union-attr]
        assert asc.has_more is True
        rest = c.responses.input_items.list(rid, order="asc", after=asc.last_id)
        assert [i.content[0].text for i in rest.data] == ["second"]  # type: ignore[union-attr]
        deleted = c.responses.with_raw_response.delete(rid)
        assert json.loads(deleted.text) == {
            "id": rid,
            "object": "response.deleted",
            "deleted": True,
        }
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(rid)
        with pytest.raises(openai.NotFoundError):
            c.responses.delete(rid)


def test_unknown_foreign_and_unstored_ids(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    cfg = responses_config(upstream)
    gw = gateway_factory(cfg)
    with client(gw) as c:
        mine = create(c, input="mine")
        unstored = create(c, input="not kept", store=False)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(unstored["id"])
        for rid in ("resp_unknown", unstored["id"]):
            with pytest.raises(openai.BadRequestError) as info:
                c.responses.create(model="openclaw", input="x", previous_response_id=rid)
            assert info.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
            assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]
        # Another agent cannot continue it.
        with pytest.raises(openai.BadRequestError):
            c.responses.create(model="openclaw/beta", input="x", previous_response_id=mine["id"])
    gw.stop()
    # Another credential cannot see or continue it.
    other = gateway_factory(cfg, token="another-token-0123456789")
    with client(other) as c:
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(mine["id"])
        with pytest.raises(openai.BadRequestError):
            c.responses.create(model="openclaw", input="x", previous_response_id=mine["id"])


def test_user_gives_a_stable_session(gw: RunningGateway, upstream: FakeUpstream) -> None:
    with client(gw) as c:
        one = create(c, input="one", user="ada")
        create(c, input="two", user="ada")
    assert one["_session"] == "agent:main:openresponses-user:ada"
    assert [m["content"] for m in upstream.model_requests[-1].body["messages"]] == [
        "one",
        "Echo: one",
        "two",
    ]


def test_max_output_tokens_makes_an_incomplete_response(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    with client(gw) as c:
        body = create(c, input="one two three four", max_output_tokens=2)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["_text"] == "Echo: one "
    assert body["output"][0]["status"] == "incomplete"
    body = {"model": "openclaw", "input": "one two three", "stream": True, "max_output_tokens": 2}
    events = _sse(httpx.post(gw.url + "/v1/responses", json=body, headers=gw.auth_headers()).text)
    assert events[-1]["type"] == "response.incomplete"
    done = [e for e in events if e["type"] == "response.output_item.done"]
    assert done[0]["item"]["status"] == "incomplete"
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


def test_json_schema_text_format_reaches_the_model(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    with client(gw) as c:
        body = create(
            c,
            input="x",
            text={
                "format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
            },
        )
    assert upstream.model_requests[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert body["text"]["format"]["type"] == "json_schema"


def test_the_endpoint_is_off_by_default(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    gw = gateway_factory(chat_config(upstream))
    with client(gw) as c, pytest.raises(openai.NotFoundError):
        c.responses.create(model="openclaw", input="x")


def test_agent_header_alias(gw: RunningGateway) -> None:
    with client(gw) as c:
        body = create(c, input="x", extra_headers={"x-openclaw-agent": "beta"})
    assert body["_session"].startswith("agent:beta:openresponses:")


# --- errors, raw HTTP ---------------------------------------------------------------------------


def post(gw: RunningGateway, body: Any, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", gw.auth_headers())
    return httpx.post(gw.url + "/v1/responses", json=body, headers=headers, timeout=30, **kw)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "openclaw"}, "input"),
        ({"model": "openclaw", "input": 5}, "input"),
        ({"model": "openclaw", "input": []}, "input"),
        ({"model": "openclaw", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "openclaw", "input": [{"type": "wat"}]}, "input[0]"),
        ({"model": "openclaw", "input": [{"role": "assistant", "content": "x"}]}, "input"),
        ({"model": "openclaw", "input": "x", "temperature": 3}, "temperature"),
        ({"model": "openclaw", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "openclaw", "input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": "openclaw", "input": "x", "tools": [{"type": "function"}]}, "tools[0]"),
        ({"model": "openclaw", "input": "x", "background": True}, "background"),
        ({"model": "gpt-4o", "input": "x"}, "model"),
        (
            {"model": "openclaw", "input": "x", "text": {"format": {"type": "json_schema"}}},
            "text.format.schema",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(gw: RunningGateway, body: Any, param: str) -> None:
    res = post(gw, body)
    assert res.status_code == 400, res.text
    error = res.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_auth_unknown_agent_and_bodies(gw: RunningGateway) -> None:
    assert post(gw, {"model": "openclaw", "input": "x"}, headers={}).status_code == 401
    res = post(gw, {"model": "openclaw/nobody", "input": "x"})
    assert res.status_code == 404 and res.json()["error"]["code"] == "model_not_found"
    res = httpx.post(gw.url + "/v1/responses", content=b"{", headers=gw.auth_headers())
    assert res.status_code == 400
    res = httpx.get(gw.url + "/v1/responses/resp_nope", headers=gw.auth_headers())
    assert res.status_code == 404 and res.json()["error"]["param"] == "response_id"
    res = httpx.get(gw.url + "/v1/responses/resp_nope", headers={})
    assert res.status_code == 401


def test_upstream_failures(gw: RunningGateway, upstream: FakeUpstream) -> None:
    upstream.script(HttpError.server_error())
    res = post(gw, {"model": "openclaw", "input": "x"})
    assert res.status_code == 502 and res.json()["error"]["type"] == "upstream_error"
    # After the stream started: response.failed, with the response object marked failed.
    upstream.script(StreamError(after=2, message="boom"))
    res = post(gw, {"model": "openclaw", "input": "one two three", "stream": True})
    assert res.status_code == 200
    events = _sse(res.text)
    for event in events:
        conforms(event, "ResponseStreamEvent")
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_client_leaving_cancels_the_run(gw: RunningGateway, upstream: FakeUpstream) -> None:
    upstream.script(slow_stream(chunks=200, delay=0.05))
    body = {"model": "openclaw", "input": "long", "stream": True}
    with httpx.stream(
        "POST", gw.url + "/v1/responses", json=body, headers=gw.auth_headers(), timeout=30
    ) as res:
        for line in res.iter_lines():
            if "response.output_text.delta" in line:
                break
    assert upstream.wait_for_disconnect(30)
    assert upstream.disconnects[0].chunks_sent < 200


# --- chat completions: the same files, usage details --------------------------------------------


def test_chat_completions_take_files_too(gw: RunningGateway, upstream: FakeUpstream) -> None:
    document = base64.b64encode(pdf("The gate code is 4711.")).decode()
    with client(gw) as c:
        reply = c.chat.completions.create(
            model="openclaw",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is the code?"},
                        {
                            "type": "file",
                            "file": {
                                "filename": "gate.pdf",
                                "file_data": f"data:application/pdf;base64,{document}",
                            },
                        },
                    ],
                }
            ],
        )
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(
                model="openclaw",
                messages=[
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}
                ],
            )
    assert reply.choices[0].finish_reason == "stop"
    [user] = upstream.model_requests[-1].body["messages"]
    texts = [p["text"] for p in user["content"]]
    assert texts[0] == "What is the code?" and "The gate code is 4711." in texts[1]
    assert info.value.body["param"] == "messages"  # type: ignore[index]


def test_usage_details_when_the_upstream_reports_them(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    upstream.script(
        Answer(cached_tokens=3, reasoning_tokens=2), Answer(cached_tokens=3, reasoning_tokens=2)
    )
    with client(gw) as c:
        chat = c.chat.completions.with_raw_response.create(
            model="openclaw", messages=[{"role": "user", "content": "hi"}]
        )
        body = create(c, input="hi")
    usage = json.loads(chat.text)["usage"]
    conforms(json.loads(chat.text), "CreateChatCompletionResponse")
    assert usage["prompt_tokens_details"] == {"cached_tokens": 3}
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 2}
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 3
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 2
    # Not reported: not made up.
    with client(gw) as c:
        plain = c.chat.completions.create(
            model="openclaw", messages=[{"role": "user", "content": "x"}]
        )
    assert plain.usage is not None and plain.usage.prompt_tokens_details is None


# --- x-openclaw-model ---------------------------------------------------------------------------


def test_the_model_override_allowed_and_refused(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> None:
    cfg = responses_config(upstream)
    cfg["agents"]["defaults"]["models"] = {"fake/text-only": {"alias": "small"}}
    gw = gateway_factory(cfg)
    with client(gw) as c:
        for name in ("small", "fake/text-only"):
            c.chat.completions.create(
                model="openclaw",
                messages=[{"role": "user", "content": "x"}],
                extra_headers={"x-openclaw-model": name},
            )
            assert upstream.model_requests[-1].body["model"] == "text-only"
        create(c, input="x", extra_headers={"x-openclaw-model": "small"})
        assert upstream.model_requests[-1].body["model"] == "text-only"
        # The agent's own model needs no catalog entry; no header: the agent's model.
        create(c, input="x", extra_headers={"x-openclaw-model": "fake/fake-model"})
        assert upstream.model_requests[-1].body["model"] == "fake-model"
        for call in (
            lambda h: c.chat.completions.create(
                model="openclaw", messages=[{"role": "user", "content": "x"}], extra_headers=h
            ),
            lambda h: c.responses.create(model="openclaw", input="x", extra_headers=h),
        ):
            with pytest.raises(openai.BadRequestError) as info:
                call({"x-openclaw-model": "fake/secret-model"})
            body = info.value.body
            assert body["param"] == "x-openclaw-model"  # type: ignore[index]
            assert body["code"] == "model_not_allowed"  # type: ignore[index]
            assert "`small`" in body["message"] and "`fake/text-only`" in body["message"]  # type: ignore[index]


def test_parallel_tool_calls_reaches_the_model(gw: RunningGateway, upstream: FakeUpstream) -> None:
    with client(gw) as c:
        create(c, input="x", tools=[WEATHER], parallel_tool_calls=False)
        assert upstream.model_requests[-1].body["parallel_tool_calls"] is False
        c.chat.completions.create(
            model="openclaw",
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            parallel_tool_calls=False,
        )
        assert upstream.model_requests[-1].body["parallel_tool_calls"] is False
        create(c, input="x")  # no tools: not sent
        assert "parallel_tool_calls" not in upstream.model_requests[-1].body


def test_assistant_messages_after_the_last_user_message_are_kept(
    gw: RunningGateway, upstream: FakeUpstream
) -> None:
    """Regression: they were dropped without a word."""
    with client(gw) as c:
        create(c, input=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
        assert [m["content"] for m in upstream.model_requests[-1].body["messages"]] == ["a", "b"]
        c.chat.completions.create(
            model="openclaw",
            messages=[{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}],
            user="tail",
        )
        sent = upstream.model_requests[-1].body["messages"]
        assert [(m["role"], m["content"]) for m in sent] == [("user", "c"), ("assistant", "d")]
        # Kept in the session, so the next turn agrees with the client.
        c.chat.completions.create(
            model="openclaw",
            messages=[
                {"role": "user", "content": "c"},
                {"role": "assistant", "content": "d"},
                {"role": "assistant", "content": "Echo: d"},
                {"role": "user", "content": "e"},
            ],
            user="tail",
        )
    sent = upstream.model_requests[-1].body["messages"]
    assert [m["content"] for m in sent] == ["c", "d", "Echo: d", "e"]


@pytest.mark.parametrize("branch", ["follow-up", "deleted", "unstored", "failed", "failed-stream"])
def test_a_chain_is_exactly_its_responses(
    gw: RunningGateway, upstream: FakeUpstream, branch: str
) -> None:
    """Regression: continuing a response showed the model whatever its session had gathered
    since (another follow-up, deleted or unstored ones, a failed run's question)."""
    with client(gw) as c:
        first = create(c, input="A")
        body = {"model": "openclaw", "input": "B b b", "previous_response_id": first["id"]}
        if branch in ("follow-up", "deleted"):
            other = create(c, input="B", previous_response_id=first["id"])
            if branch == "deleted":
                c.responses.delete(other["id"])
        elif branch == "unstored":
            create(c, input="B", previous_response_id=first["id"], store=False)
        elif branch == "failed":
            upstream.script(HttpError.server_error())
            assert post(gw, body).status_code == 502
        else:
            upstream.script(StreamError(after=1))
            assert _sse(post(gw, {**body, "stream": True}).text)[-1]["type"] == "response.failed"
        second = create(c, input="C", previous_response_id=first["id"])
        assert [m["content"] for m in upstream.model_requests[-1].body["messages"]] == [
            "A",
            "Echo: A",
            "C",
        ]
        # The branch goes on by itself.
        create(c, input="D", previous_response_id=second["id"])
    assert [m["content"] for m in upstream.model_requests[-1].body["messages"]] == [
        "A",
        "Echo: A",
        "C",
        "Echo: C",
        "D",
    ]
