"""The stream's byte templates are the response model's own serialisation, byte for byte."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from openclaw.gateway.http.chat_response import ChunkWriter, chunk, event
from openclaw.messages import ToolCallDelta

HEAD = ("chatcmpl-0123456789abcdef01234567", 1_700_000_000, "openclaw/main")


@given(st.text())
def test_content_template_is_the_chunk_model(text: str) -> None:
    assert ChunkWriter(*HEAD).content(text) == event(chunk(*HEAD, delta={"content": text}))


@given(st.text(min_size=1, max_size=40), st.integers(0, 2**40), st.text(max_size=20))
def test_templates_hold_for_any_head(model: str, created: int, text: str) -> None:
    head = ("chatcmpl-x", created, model)
    assert ChunkWriter(*head).content(text) == event(chunk(*head, delta={"content": text}))


def test_every_event_of_a_stream_is_an_openai_chunk() -> None:
    w = ChunkWriter(*HEAD)
    assert w.role == event(chunk(*HEAD, delta={"role": "assistant", "content": ""}))
    assert w.finish("stop") == event(chunk(*HEAD, finish="stop"))
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert w.usage(usage) == event(chunk(*HEAD, usage=usage))
    first = w.tool_call(ToolCallDelta(0, "call_0", "get_weather", ""))
    assert first == event(
        chunk(
            *HEAD,
            delta={
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_0",
                        "type": "function",
                        "function": {"arguments": "", "name": "get_weather"},
                    }
                ]
            },
        )
    )
