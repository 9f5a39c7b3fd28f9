"""``openai-completions``: any OpenAI-compatible server (vLLM, Ollama, llama.cpp, OpenAI)."""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp
import orjson

from openclaw.config.schema import ProviderConfig
from openclaw.errors import UpstreamError
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
from openclaw.providers.tokens import estimate_tokens, estimate_usage

_FINISH: dict[str, StopReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def wire_message(msg: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role}
    if isinstance(msg.content, str):
        out["content"] = msg.content
    else:
        parts: list[dict[str, Any]] = []
        for part in msg.content:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                url = f"data:{part.mime};base64,{base64.b64encode(part.data).decode()}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
        out["content"] = parts
    if msg.name:
        out["name"] = msg.name
    if msg.tool_call_id:
        out["tool_call_id"] = msg.tool_call_id
    if msg.tool_calls:
        out["tool_calls"] = [call.as_dict() for call in msg.tool_calls]
        if not out["content"]:
            out["content"] = None
    return out


def request_body(
    req: ModelRequest,
    *,
    stream: bool,
    max_tokens_field: str = "max_tokens",
    encode_tool: Callable[[ToolDefinition], Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [wire_message(m) for m in req.messages],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    s = req.sampling
    # One limit, sent in the field this provider honours (`maxTokensField`).
    for key, value in (
        ("temperature", s.temperature),
        ("top_p", s.top_p),
        (max_tokens_field, s.max_tokens),
        ("seed", s.seed),
        ("presence_penalty", s.presence_penalty),
        ("frequency_penalty", s.frequency_penalty),
        ("response_format", s.response_format),
    ):
        if value is not None:
            body[key] = value
    if s.stop:
        body["stop"] = list(s.stop)
    if req.tools:
        body["tools"] = [(encode_tool or _tool)(t) for t in req.tools]
        if req.tool_choice is not None:
            body["tool_choice"] = _tool_choice(req.tool_choice)
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    return orjson.dumps(body)


class EncodedTools:
    """Tool definitions as JSON, the server's own encoded once: the same objects come with
    every request, and a dozen schemas are most of a small request's body.  (A client's tools
    change per request: they are encoded each time.)"""

    LIMIT = 512  # more server tools than agents times tools: something else is being cached

    def __init__(self) -> None:
        self._done: dict[int, tuple[ToolDefinition, orjson.Fragment]] = {}

    def __call__(self, tool: ToolDefinition) -> Any:
        if tool.wire is not None:
            return _tool(tool)
        hit = self._done.get(id(tool))
        if hit is None or hit[0] is not tool:
            if len(self._done) >= self.LIMIT:
                self._done.clear()
            hit = (tool, orjson.Fragment(orjson.dumps(_tool(tool))))
            self._done[id(tool)] = hit
        return hit[1]


def _tool(tool: ToolDefinition) -> dict[str, Any]:
    if tool.wire is not None:
        return dict(tool.wire)  # the client's own tool, exactly
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    if tool.parameters is not None:
        fn["parameters"] = tool.parameters
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


def _tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if isinstance(choice, FunctionChoice):
        return {"type": "function", "function": {"name": choice.name}}
    return choice if isinstance(choice, str) else dict(choice)


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    try:
        return Usage.from_dict(data) if "prompt_tokens" in data else None
    except ValueError:
        return None


def _chunk_events(chunk: dict[str, Any]) -> tuple[list[ProviderEvent], str | None]:
    """The events of one streamed chunk and its finish reason, if any (TypeError, ValueError
    and the like for a chunk of the wrong shape: the caller reports it as malformed)."""
    events: list[ProviderEvent] = []
    reason = None
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        content = text_field(delta.get("content"))
        if content:
            events.append(TextDelta(content))
        for call in delta.get("tool_calls") or ():
            fn = call.get("function") or {}
            index = int(call.get("index", 0))
            events.append(
                ToolCallDelta(
                    index,
                    text_field(call.get("id")),
                    text_field(fn.get("name")),
                    text_field(fn.get("arguments")) or "",
                )
            )
        reason = text_field(choice.get("finish_reason")) or reason
    usage = _usage(chunk.get("usage"))
    if usage is not None:
        events.append(usage)
    return events, reason


class OpenAICompatProvider(HttpProviderBase):
    """Streams from ``<baseUrl>/chat/completions``; a non-streaming call when the caller needs no
    deltas (one JSON document is cheaper than parsing an event stream)."""

    def __init__(self, name: str, cfg: ProviderConfig) -> None:
        super().__init__(name, cfg)
        assert cfg.base_url is not None
        self._url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._embeddings_url = cfg.base_url.rstrip("/") + "/embeddings"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        headers.update(cfg.headers)
        self._headers = headers
        self._tools = EncodedTools()

    async def embed(
        self, model: str, inputs: Sequence[EmbeddingInput], dimensions: int | None
    ) -> Embeddings:
        """``POST <baseUrl>/embeddings``: every input in one call."""
        label = self._label(model)
        body: dict[str, Any] = {
            "model": model,
            "input": [i if isinstance(i, str) else list(i) for i in inputs],
            "encoding_format": "float",
        }
        if dimensions is not None:
            body["dimensions"] = dimensions
        with upstream_errors(label):
            async with self.session.post(
                self._embeddings_url, data=orjson.dumps(body), headers=self._headers
            ) as resp:
                await raise_for_response(resp, label)
                data = orjson.loads(await resp.read())
        try:
            items = sorted(data["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in items]
        except (KeyError, TypeError, ValueError):
            raise malformed(label, "embeddings response") from None
        if len(vectors) != len(inputs):
            raise malformed(label, "embeddings response")
        usage = data.get("usage") if isinstance(data, dict) else None
        tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if not isinstance(tokens, int):
            # Not reported: counted as the gateway counts a reply it was not told about.
            tokens = sum(estimate_tokens(i) if isinstance(i, str) else len(i) for i in inputs)
        return Embeddings(vectors, tokens)

    async def stream(
        self, request: ModelRequest, *, deltas: bool = True
    ) -> AsyncGenerator[ProviderEvent, None]:
        label = self._label(request.model)
        body = request_body(
            request,
            stream=deltas,
            max_tokens_field=self.cfg.max_tokens_field,
            encode_tool=self._tools,
        )
        with upstream_errors(label):
            async with self.session.post(
                self._url, data=upload(body), headers=self._headers
            ) as resp:
                await raise_for_response(resp, label)
                if deltas:
                    async for event in self._events(resp, label):
                        yield event
                else:
                    for event in self._whole(await resp.read(), label):
                        yield event

    def _whole(self, body: bytes, label: str) -> list[ProviderEvent]:
        try:
            data = orjson.loads(body)
            choice = data["choices"][0]
            text = text_field(choice["message"].get("content")) or ""
            calls = choice["message"].get("tool_calls") or ()
            deltas = [
                ToolCallDelta(
                    i,
                    text_field(c.get("id")),
                    text_field(c["function"]["name"]),
                    text_field(c["function"]["arguments"]) or "",
                )
                for i, c in enumerate(calls)
            ]
            finish = text_field(choice.get("finish_reason")) or "stop"
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise malformed(label, "response") from None
        events: list[ProviderEvent] = []
        if text:
            events.append(TextDelta(text))
        events.extend(deltas)
        usage = _usage(data.get("usage"))
        if usage is not None:
            events.append(usage)
        events.append(Finished(_FINISH.get(finish, "stop")))
        return events

    async def _events(
        self, resp: aiohttp.ClientResponse, label: str
    ) -> AsyncIterator[ProviderEvent]:
        finish: StopReason | None = None
        seen = False
        async for _, data in sse_data(resp.content):
            seen = True
            if data == b"[DONE]":
                break
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise malformed(label) from None
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                # Mid-answer: the same table as an HTTP status, by the error's type and code.
                message, kind, code = error_fields(chunk["error"])
                raise upstream_error(label, message, kind=kind, code=code)
            try:
                events, reason = _chunk_events(chunk)
            except (AttributeError, TypeError, ValueError, KeyError):
                raise malformed(label) from None
            if reason:
                finish = _FINISH.get(reason, "stop")
            for event in events:
                yield event
        else:
            if not seen and resp.content_type != "text/event-stream":
                raise not_an_event_stream(label, resp.content_type)
            # The body ended without [DONE]: a dropped stream, not a finished answer.
            if finish is None:
                raise UpstreamError(
                    f"{label}: the upstream stream ended early", code="upstream_eof"
                )
        yield Finished(finish or "stop")

    async def count_tokens(self, model: str, messages: Sequence[ChatMessage], text: str) -> Usage:
        return estimate_usage(messages, text)
