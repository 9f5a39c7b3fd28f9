"""Chat Completions responses: the ``chat.completion`` and ``chat.completion.chunk`` objects, and
for the stream's hot path byte templates cut from those objects' own serialisation.

A content delta is the event sent per token; building and encoding its whole object each time
cost ~1 us more than splicing the encoded text into a template (measured), which adds up over
long streams.  The templates are derived from ``chunk`` itself, and a test pins them to it byte
for byte, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import orjson

from openclaw.agents.events import ToolFinished, ToolStarted, tool_data
from openclaw.agents.runner import RunResult
from openclaw.gateway.wire import sse_json
from openclaw.ids import hex_id
from openclaw.messages import TextDelta, ToolCallDelta

# Stands for the delta's text while the template is cut; no text can encode to it.
_MARK = "\x00openclaw-text\x00"


def completion_id() -> str:
    return "chatcmpl-" + hex_id(12)


def finish_reason(result: RunResult) -> str:
    """OpenAI's ``finish_reason``: the model's own where OpenAI has it, else ``stop``."""
    if result.stop_reason in ("length", "tool_calls", "content_filter"):
        return result.stop_reason
    return "stop"


def completion(result: RunResult, cid: str, created: int, model: str) -> dict[str, Any]:
    """The ``chat.completion`` object of a finished run."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.text or (None if result.tool_calls else ""),
        "refusal": None,
    }
    if result.tool_calls:
        message["tool_calls"] = [call.as_dict() for call in result.tool_calls]
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(result),
            }
        ],
        "usage": result.usage.as_dict(),
    }


def chunk(
    cid: str,
    created: int,
    model: str,
    *,
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` object: a delta, the finish, or (``usage``) the usage."""
    out: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }
    if usage is not None:
        out["choices"] = []
        out["usage"] = usage
    else:
        out["choices"] = [
            {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
        ]
    return out


def event(obj: Any) -> bytes:
    """One SSE event."""
    return b"data: " + sse_json(obj) + b"\n\n"


class ChunkWriter:
    """The SSE events of one stream."""

    def __init__(self, cid: str, created: int, model: str) -> None:
        self._head = (cid, created, model)
        self.role = event(chunk(*self._head, delta={"role": "assistant", "content": ""}))
        sample = event(chunk(*self._head, delta={"content": _MARK}))
        # The text comes after the head's fields (the model's name among them): split at the last.
        self._prefix, self._suffix = sample.rsplit(orjson.dumps(_MARK), 1)

    def render(self, item: TextDelta | ToolCallDelta | ToolStarted | ToolFinished) -> bytes:
        """The SSE event of one thing the run produced."""
        if isinstance(item, TextDelta):
            return self.content(item.text)
        if isinstance(item, ToolCallDelta):
            return self.tool_call(item)
        return self.tool_event(tool_data(item))

    def content(self, text: str) -> bytes:
        return self._prefix + sse_json(text) + self._suffix

    def tool_call(self, delta: ToolCallDelta) -> bytes:
        call: dict[str, Any] = {"index": delta.index}
        if delta.id:
            call["id"] = delta.id
            call["type"] = "function"
        fn: dict[str, str] = {"arguments": delta.arguments}
        if delta.name:
            fn["name"] = delta.name
        call["function"] = fn
        return event(chunk(*self._head, delta={"tool_calls": [call]}))

    def tool_event(self, data: dict[str, Any]) -> bytes:
        """Tool progress, on request: an ordinary chunk (an empty delta, so any client skips it)
        with the event in the extension field ``openclaw_tool``."""
        obj = chunk(*self._head, delta={})
        obj["openclaw_tool"] = data
        return event(obj)

    def finish(self, reason: str) -> bytes:
        return event(chunk(*self._head, finish=reason))

    def usage(self, usage: dict[str, int]) -> bytes:
        return event(chunk(*self._head, usage=usage))
