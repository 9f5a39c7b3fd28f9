"""The OpenAI Chat Completions wire format of ``FakeUpstream``.

``POST /v1/chat/completions`` (stream / non-stream) and ``GET /v1/models``; the key is sent as
``Authorization: Bearer <key>``.  A body without a ``messages`` list is a 400.  Errors are
``{"error": {message, type, param, code}}``; streams are ``data: <chunk>`` SSE events ended by
``data: [DONE]``.

``ToolCalls`` on this API:
    Non-streaming: ``message = {"role": "assistant", "content": text or None,
    "tool_calls": [{"id", "type": "function", "function": {"name", "arguments"}}, ...]}``,
    ``finish_reason: "tool_calls"``.  Streaming: the role chunk (``content`` ``""`` with text,
    else null), the text's word chunks, then per call one chunk ``{"tool_calls": [{"index": i,
    "id", "type": "function", "function": {"name", "arguments": ""}}]}`` followed by the
    arguments in up to 3 pieces ``{"tool_calls": [{"index": i, "function": {"arguments":
    piece}}]}``; then the empty-delta ``finish_reason: "tool_calls"`` chunk, the usage chunk
    (with include_usage) and ``[DONE]``.
"""

from __future__ import annotations

import hashlib
import math
import time
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

__all__ = ["MODELS_PATH", "OPENAI", "OpenAIWire", "models_body"]

MODELS_PATH = "/v1/models"

_DONE = b"data: [DONE]\n\n"


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _error_type(status: int) -> str:
    if status == 429:
        return "requests"
    return "invalid_request_error" if status < 500 else "server_error"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


EMBEDDINGS_PATH = "/v1/embeddings"
EMBEDDING_DIMENSIONS = 8


def fake_vector(item: Any, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake's embedding of one input: unit length, the same for the same input, from a
    hash of it (so tests can compute what to expect)."""
    digest = hashlib.sha256(orjson.dumps(item)).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def embeddings_body(body: Any) -> dict[str, Any] | None:
    """The ``/v1/embeddings`` answer: a vector per input (``fake_vector``), ``dimensions`` long
    when asked; usage = words of the strings + lengths of the token arrays.  None for a body
    that is not an embeddings request."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return None
    raw = body.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        return None
    dims = body.get("dimensions") or EMBEDDING_DIMENSIONS
    data = [
        {"object": "embedding", "index": i, "embedding": fake_vector(item, dims)}
        for i, item in enumerate(items)
    ]
    tokens = sum(len(x.split()) if isinstance(x, str) else len(x) for x in items)
    return {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def models_body(models: tuple[str, ...]) -> dict[str, Any]:
    """The ``GET /v1/models`` listing."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models]
    return {"object": "list", "data": data}


class _Response:
    """Renders the bodies / chunks of one response (same id, creation time and model)."""

    def __init__(self, rid: str, model: Any, include_usage: bool) -> None:
        self.rid = rid
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.rid, "object": kind, "created": self.created, "model": self.model}

    def completion(
        self, message: dict[str, Any], finish_reason: str, usage: dict[str, int] | None
    ) -> JsonReply:
        out = self._head("chat.completion")
        out["choices"] = [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ]
        if usage is not None:
            out["usage"] = usage
        return JsonReply(200, out)

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        c = self._head("chat.completion.chunk")
        c["choices"] = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        ]
        if self.include_usage:
            c["usage"] = None
        return _sse(c)

    def tail(self, finish_reason: str, usage: dict[str, int]) -> list[bytes]:
        """The finish chunk, the usage chunk (with include_usage) and ``[DONE]``."""
        out = [self.chunk({}, finish_reason)]
        if self.include_usage:
            c = self._head("chat.completion.chunk")
            c["choices"] = []
            c["usage"] = usage
            out.append(_sse(c))
        out.append(_DONE)
        return out


class OpenAIWire:
    """The Chat Completions API (see the module docstring)."""

    path = "/v1/chat/completions"
    id_prefix = "chatcmpl-fake"

    def authorized(self, headers: Mapping[str, str], api_key: str) -> bool:
        return headers.get("Authorization") == f"Bearer {api_key}"

    def unauthorized(self) -> HttpError:
        return HttpError.unauthorized()

    def invalid(self, body: Any) -> HttpError | None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return HttpError(400, "'messages' is a required property", param="messages")
        return None

    def error_body(self, error: HttpError) -> dict[str, Any]:
        return {
            "error": {
                "message": error.message_text(),
                "type": error.type or _error_type(error.status),
                "param": error.param,
                "code": error.code,
            }
        }

    def stream_error(self, behaviour: StreamError) -> bytes:
        return _sse(self.error_body(behaviour.http_error()))

    def answer(
        self, body: dict[str, Any], answer: Answer, rid: str, model: Any, stream: bool
    ) -> Reply:
        messages: list[Any] = body["messages"]
        limit = int_field(body, "max_completion_tokens", "max_tokens")
        pieces, cut = answer_pieces(answer, messages, limit)
        finish = "length" if cut else "stop"
        usage: dict[str, Any] = _usage(count_words(messages), len(pieces))
        if answer.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": answer.cached_tokens}
        if answer.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": answer.reasoning_tokens}
        r = _Response(rid, model, _include_usage(body) and not answer.no_usage)
        if not stream:
            message = {"role": "assistant", "content": "".join(pieces)}
            return r.completion(message, finish, None if answer.no_usage else usage)
        return StreamReply(
            head=r.chunk({"role": "assistant", "content": ""}),
            frames=[Frame(r.chunk({"content": piece})) for piece in pieces],
            tail=r.tail(finish, usage),
        )

    def tool_calls(
        self, body: dict[str, Any], calls: ToolCalls, rid: str, model: Any, stream: bool
    ) -> Reply:
        words = calls.words()
        usage = _usage(count_words(body["messages"]), calls.completion_tokens())
        r = _Response(rid, model, _include_usage(body))
        if not stream:
            tool_calls = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
                for i, (name, arguments) in enumerate(calls.calls)
            ]
            message = {"role": "assistant", "content": calls.text or None, "tool_calls": tool_calls}
            return r.completion(message, "tool_calls", usage)
        frames = [Frame(r.chunk({"content": word})) for word in words]
        for i, (name, arguments) in enumerate(calls.calls):
            first = {
                "index": i,
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            frames.append(Frame(r.chunk({"tool_calls": [first]})))
            frames.extend(
                Frame(r.chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
                for piece in split_arguments(arguments)
            )
        return StreamReply(
            head=r.chunk({"role": "assistant", "content": "" if words else None}),
            frames=frames,
            tail=r.tail("tool_calls", usage),
        )


OPENAI = OpenAIWire()
