"""``anthropic-messages``: the Anthropic Messages API, streamed over SSE."""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, ClassVar

import orjson

from openclaw.config.schema import ProviderConfig
from openclaw.errors import UnsupportedError, UpstreamError
from openclaw.messages import (
    ChatMessage,
    FunctionChoice,
    ImagePart,
    StopReason,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoice,
    ToolDefinition,
    Usage,
)
from openclaw.providers.base import (
    EmbeddingInput,
    Embeddings,
    Finished,
    ModelRequest,
    ProviderEvent,
)
from openclaw.providers.errors import (
    error_fields,
    malformed,
    not_an_event_stream,
    raise_for_response,
    text_field,
    upstream_error,
    upstream_errors,
)
from openclaw.providers.http import HttpProviderBase, sse_data, upload
from openclaw.providers.tokens import estimate_usage

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

_STOP: dict[str, StopReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": text}
    return value if isinstance(value, dict) else {"value": value}


def _blocks(msg: ChatMessage) -> list[dict[str, Any]]:
    if msg.role == "tool":
        # A tool result travels as a block of the user's turn, tied to the call's id.
        return [{"type": "tool_result", "tool_use_id": msg.tool_call_id or "", "content": msg.text}]
    calls = [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": _json_object(c.arguments)}
        for c in msg.tool_calls
    ]
    if isinstance(msg.content, str):
        return [{"type": "text", "text": msg.content}, *calls]
    blocks: list[dict[str, Any]] = []
    for part in msg.content:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            data = base64.b64encode(part.data).decode()
            source = {"type": "base64", "media_type": part.mime, "data": data}
            blocks.append({"type": "image", "source": source})
    return [*blocks, *calls]


def request_body(req: ModelRequest, max_tokens: int, *, stream: bool) -> bytes:
    system = "\n\n".join(m.text for m in req.messages if m.role == "system")
    turns: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg.role == "system":
            continue
        role = "assistant" if msg.role == "assistant" else "user"
        blocks = [b for b in _blocks(msg) if b["type"] != "text" or b["text"]]
        if not blocks:
            continue
        # The API wants alternating roles: consecutive turns of one role are merged.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.sampling.max_tokens or max_tokens,
        "messages": turns,
        "stream": stream,
    }
    if system:
        body["system"] = system
    s = req.sampling
    if s.temperature is not None:
        body["temperature"] = min(s.temperature, 1.0)
    if s.top_p is not None:
        body["top_p"] = s.top_p
    if s.stop:
        body["stop_sequences"] = list(s.stop)
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
        choice = _tool_choice(req.tool_choice, req.parallel_tool_calls)
        if choice is not None:
            body["tool_choice"] = choice
    return orjson.dumps(body)


def _tool(tool: ToolDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": tool.name,
        "input_schema": tool.parameters or {"type": "object", "properties": {}},
    }
    if tool.description:
        out["description"] = tool.description
    return out


def _tool_choice(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    out = _choice(choice)
    if parallel is False:
        # Anthropic says it inside tool_choice (which "none" may not carry).
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out = {**out, "disable_parallel_tool_use": True}
    return out


def _choice(choice: ToolChoice | None) -> dict[str, Any] | None:
    if isinstance(choice, FunctionChoice):
        return {"type": "tool", "name": choice.name}
    if not isinstance(choice, str):
        return None  # a kind of choice Anthropic has no equivalent for: the default (auto)
    return {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}.get(
        choice
    )


class AnthropicProvider(HttpProviderBase):
    def __init__(self, name: str, cfg: ProviderConfig) -> None:
        super().__init__(name, cfg)
        assert cfg.base_url is not None
        base = cfg.base_url.rstrip("/")
        self._url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        headers = {
            "Content-Type": "application/json",
            "anthropic-version": API_VERSION,
            "Accept": "application/json",
        }
        if cfg.api_key:
            headers["x-api-key"] = cfg.api_key
        headers.update(cfg.headers)
        self._headers = headers
        self._max_tokens = {m.id: m.max_tokens for m in cfg.models if m.max_tokens}

    async def embed(
        self, model: str, inputs: Sequence[EmbeddingInput], dimensions: int | None
    ) -> Embeddings:
        raise UnsupportedError(
            f"`{self.name}/{model}` cannot make embeddings: Anthropic has no embeddings API.",
            param="model",
        )

    async def stream(
        self, request: ModelRequest, *, deltas: bool = True
    ) -> AsyncGenerator[ProviderEvent, None]:
        label = self._label(request.model)
        max_tokens = self._max_tokens.get(request.model, DEFAULT_MAX_TOKENS)
        body = request_body(request, max_tokens, stream=True)
        with upstream_errors(label):
            async with self.session.post(
                self._url, data=upload(body), headers=self._headers
            ) as resp:
                await raise_for_response(resp, label)
                state = _MessageStream(label)
                seen = False
                async for event, data in sse_data(resp.content):
                    seen = True
                    try:
                        payload: Any = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise malformed(label) from None
                    for item in state.take(event, payload):
                        yield item
                    if state.done:
                        break
                if not seen and resp.content_type != "text/event-stream":
                    raise not_an_event_stream(label, resp.content_type)
                for item in state.end():
                    yield item

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage], text: str) -> Usage:
        return estimate_usage(messages, text)


class _MessageStream:
    """One Messages API event stream, event by event: token counts, the stop reason, and which
    content blocks are tool calls."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens: int | None = None
        self.stop: StopReason | None = None
        self.done = False
        self.tool_index: dict[int, int] = {}  # content block index -> tool call index

    def take(self, event: str, payload: Any) -> list[ProviderEvent]:
        kind = payload.get("type", event) if isinstance(payload, dict) else event
        handler = self._HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return []  # ping, content_block_stop, and kinds added later
        try:
            return handler(self, payload)
        except (AttributeError, TypeError, ValueError, KeyError):
            raise malformed(self.label) from None

    def end(self) -> list[ProviderEvent]:
        if not self.done:
            raise UpstreamError(
                f"{self.label}: the upstream stream ended early", code="upstream_eof"
            )
        usage = Usage(self.input_tokens, self.output_tokens, cached_tokens=self.cached_tokens)
        return [usage, Finished(self.stop or "stop")]

    def _block_delta(self, payload: Any) -> list[ProviderEvent]:
        delta = payload.get("delta") or {}
        text = text_field(delta.get("text")) if delta.get("type") == "text_delta" else None
        if text:
            return [TextDelta(text)]
        if delta.get("type") != "input_json_delta":
            return []
        block = int(payload.get("index", 0))
        if block in self.tool_index:
            return [
                ToolCallDelta(
                    self.tool_index[block], None, None, text_field(delta.get("partial_json")) or ""
                )
            ]
        return []

    def _block_start(self, payload: Any) -> list[ProviderEvent]:
        info = payload.get("content_block") or {}
        if info.get("type") != "tool_use":
            return []
        block = int(payload.get("index", 0))
        index = self.tool_index[block] = len(self.tool_index)
        return [ToolCallDelta(index, text_field(info.get("id")), text_field(info.get("name")), "")]

    def _message_start(self, payload: Any) -> list[ProviderEvent]:
        usage = (payload.get("message") or {}).get("usage") or {}
        read = usage.get("cache_read_input_tokens")
        written = usage.get("cache_creation_input_tokens")
        # OpenAI's prompt_tokens include cache reads (and writes): Anthropic counts them apart.
        self.input_tokens = int(usage.get("input_tokens") or 0) + int(read or 0) + int(written or 0)
        self.output_tokens = int(usage.get("output_tokens") or 0)
        if isinstance(read, int):
            self.cached_tokens = read
        return []

    def _message_delta(self, payload: Any) -> list[ProviderEvent]:
        reason = (payload.get("delta") or {}).get("stop_reason")
        if reason:
            self.stop = _STOP.get(reason, "stop")
        usage = payload.get("usage") or {}
        self.output_tokens = int(usage.get("output_tokens") or self.output_tokens)
        return []

    def _message_stop(self, payload: Any) -> list[ProviderEvent]:
        self.done = True
        return []

    def _error(self, payload: Any) -> list[ProviderEvent]:
        # Mid-answer: the same table as an HTTP status, by the error's type.
        message, kind, code = error_fields(payload.get("error"))
        raise upstream_error(self.label, message, kind=kind, code=code)

    _HANDLERS: ClassVar[dict[str, Callable[[_MessageStream, Any], list[ProviderEvent]]]] = {
        "content_block_delta": _block_delta,
        "content_block_start": _block_start,
        "message_start": _message_start,
        "message_delta": _message_delta,
        "message_stop": _message_stop,
        "error": _error,
    }
