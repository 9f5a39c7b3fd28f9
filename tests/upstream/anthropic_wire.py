"""The Anthropic Messages wire format of ``FakeUpstream``.

``POST /v1/messages`` (stream / non-stream); the key is sent as ``x-api-key``.  A body that is
not an object, has no ``messages`` list or no integer ``max_tokens`` is a 400.  Errors are
``{"type": "error", "error": {type, message}}``; streams are ``event: <type>`` /
``data: <payload>`` SSE events: ``message_start``, then per content block
``content_block_start`` (the first one followed by a ``ping``), ``content_block_delta`` events
and ``content_block_stop``, then ``message_delta`` (stop reason, output tokens) and
``message_stop``.  A ``StreamError`` ends the stream with ``event: error`` (type
``overloaded_error`` unless given).

``ToolCalls`` on this API:
    A text block (if ``text``) then ``{"type": "tool_use", "id", "name", "input":
    <parsed arguments>}`` blocks, ``stop_reason: "tool_use"`` (a non-streaming request whose
    arguments are not a JSON object gets a 500).  Streaming: per block ``content_block_start``
    (tool_use with ``input: {}``), ``content_block_delta`` events (``text_delta`` per word /
    ``{"type": "input_json_delta", "partial_json": piece}``), ``content_block_stop``; then
    ``message_delta`` (``stop_reason: "tool_use"``) and ``message_stop``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tests.upstream.behaviours import (
    Answer,
    HttpError,
    StreamError,
    ToolCalls,
    answer_pieces,
    count_words,
    int_field,
    split_arguments,
)
from tests.upstream.wire import Frame, JsonReply, Reply, StreamReply

__all__ = ["ANTHROPIC", "AnthropicWire"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_type(status: int) -> str:
    return _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def _event(payload: dict[str, Any]) -> bytes:
    """An SSE event named after the payload's ``type``."""
    name: str = payload["type"]
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


_PING = _event({"type": "ping"})
_MESSAGE_STOP = _event({"type": "message_stop"})


def _message(
    rid: str, model: Any, content: list[dict[str, Any]], stop: str | None, usage: Any
) -> dict[str, Any]:
    """A message object; ``usage`` None leaves the usage out."""
    out: dict[str, Any] = {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def _message_start(
    rid: str, model: Any, input_tokens: int | None, cached: int | None = None
) -> bytes:
    usage = None if input_tokens is None else {"input_tokens": input_tokens, "output_tokens": 1}
    if usage is not None and cached is not None:
        usage["cache_read_input_tokens"] = cached
    return _event({"type": "message_start", "message": _message(rid, model, [], None, usage)})


def _message_end(stop: str, output_tokens: int | None) -> bytes:
    """``message_delta`` (with usage unless ``output_tokens`` is None) and ``message_stop``."""
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
    }
    if output_tokens is not None:
        delta["usage"] = {"output_tokens": output_tokens}
    return _event(delta) + _MESSAGE_STOP


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    return _event({"type": "content_block_start", "index": index, "content_block": block})


def _block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event({"type": "content_block_delta", "index": index, "delta": delta})


def _block_stop(index: int) -> bytes:
    return _event({"type": "content_block_stop", "index": index})


def _text_delta(text: str) -> dict[str, Any]:
    return {"type": "text_delta", "text": text}


class AnthropicWire:
    """The Messages API (see the module docstring)."""

    path = "/v1/messages"
    id_prefix = "msg_fake"

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return headers.get("x-api-key") == api_key

    def unauthorized(self) -> HttpError:
        return HttpError(401, "invalid x-api-key")

    def invalid(self, body: Any) -> HttpError | None:
        if not isinstance(body, dict):
            problem = "request body must be a JSON object"
        elif not isinstance(body.get("messages"), list):
            problem = "messages: Field required"
        elif int_field(body, "max_tokens") is None:
            problem = "max_tokens: Field required"
        else:
            return None
        return HttpError(400, problem)

    def error_body(self, error: HttpError) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {
                "type": error.type or _error_type(error.status),
                "message": error.message_text(),
            },
        }

    def stream_error(self, behaviour: StreamError) -> bytes:
        return _event(self.error_body(behaviour.http_error("overloaded_error")))

    def answer(
        self, body: dict[str, Any], answer: Answer, rid: str, model: Any, stream: bool
    ) -> Reply:
        messages: list[Any] = body["messages"]
        pieces, cut = answer_pieces(answer, messages, int_field(body, "max_tokens"))
        stop = "max_tokens" if cut else "end_turn"
        input_tokens = None if answer.no_usage else count_words(messages, body.get("system"))
        if not stream:
            content = [{"type": "text", "text": "".join(pieces)}]
            usage = None
            if input_tokens is not None:
                usage = {"input_tokens": input_tokens, "output_tokens": len(pieces)}
            return JsonReply(200, _message(rid, model, content, stop, usage))
        return StreamReply(
            head=_message_start(rid, model, input_tokens, answer.cached_tokens)
            + _block_start(0, {"type": "text", "text": ""})
            + _PING,
            frames=[Frame(_block_delta(0, _text_delta(piece))) for piece in pieces],
            tail=[_block_stop(0) + _message_end(stop, None if answer.no_usage else len(pieces))],
        )

    def tool_calls(
        self, body: dict[str, Any], calls: ToolCalls, rid: str, model: Any, stream: bool
    ) -> Reply:
        words = calls.words()
        input_tokens = count_words(body["messages"], body.get("system"))
        output_tokens = calls.completion_tokens()
        if not stream:
            content: list[dict[str, Any]] = []
            if calls.text:
                content.append({"type": "text", "text": calls.text})
            for i, (name, arguments) in enumerate(calls.calls):
                try:
                    parsed = orjson.loads(arguments)
                except orjson.JSONDecodeError:
                    parsed = None
                if not isinstance(parsed, dict):
                    err = HttpError(500, f"ToolCalls: arguments of {name!r} are not a JSON object")
                    return JsonReply(500, self.error_body(err))
                content.append(
                    {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": parsed}
                )
            usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
            return JsonReply(200, _message(rid, model, content, "tool_use", usage))

        blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        if words:
            blocks.append(({"type": "text", "text": ""}, [_text_delta(w) for w in words]))
        for i, (name, arguments) in enumerate(calls.calls):
            start = {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in split_arguments(arguments)
            ]
            blocks.append((start, deltas))
        frames: list[Frame] = []
        for index, (start, deltas) in enumerate(blocks):
            ping = _PING if index == 0 else b""
            frames.append(Frame(_block_start(index, start) + ping, content=False))
            frames.extend(Frame(_block_delta(index, delta)) for delta in deltas)
            frames.append(Frame(_block_stop(index), content=False))
        return StreamReply(
            head=_message_start(rid, model, input_tokens),
            frames=frames,
            tail=[_message_end("tool_use", output_tokens)],
        )


ANTHROPIC = AnthropicWire()
