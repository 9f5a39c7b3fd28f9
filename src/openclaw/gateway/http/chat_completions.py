"""``POST /v1/chat/completions``: the OpenAI Chat Completions API as an ordinary agent run.

Order of checks, as the reference: path -> method (routing) -> auth -> body -> validation -> run.
Errors are raised; ``gateway.wire`` renders them (OpenAI-style JSON before the response starts;
after a stream has started, an SSE error event followed by ``[DONE]``).  A client that goes away
cancels the run, which closes the upstream call and stores the partial turn as aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from openclaw.agents.runner import RunParams, RunResult
from openclaw.errors import InvalidRequestError, OpenClawError, UpstreamError
from openclaw.gateway import wire
from openclaw.gateway.body import read_body
from openclaw.gateway.images import image_url_of, load_images
from openclaw.gateway.openai_schema import ChatCompletionRequest, MessageIn, parse_request
from openclaw.gateway.state import GatewayState, require_auth
from openclaw.ids import hex_id
from openclaw.logs import get_logger
from openclaw.providers.base import (
    ChatMessage,
    ContentPart,
    Role,
    SamplingParams,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
)
from openclaw.sessions.keys import ephemeral_key, is_valid_key, scope_key, user_key

log = get_logger("chat")

IMAGE_ONLY_TEXT = "User sent image(s) with no text."
MODEL_FORMS = (
    "Use `openclaw`, `openclaw/default`, `openclaw/<agentId>`, `openclaw:<agentId>` or "
    "`agent:<agentId>`."
)
STREAM_QUEUE_SIZE = 256
WATCH_AFTER_SECONDS = 0.05
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_DONE = b"data: [DONE]\n\n"
_KEEPALIVE = b": keep-alive\n\n"
_END = object()
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected; nothing more is sent."""


def agent_from_model(model: str) -> str | None:
    """The agent id a ``model`` string names; None for the default agent."""
    name = model.strip()
    if name in ("openclaw", "openclaw/default"):
        return None
    for prefix in ("openclaw/", "openclaw:", "agent:"):
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    raise InvalidRequestError(
        f"Invalid model `{model}`. {MODEL_FORMS}", param="model", code="model_not_found"
    )


def _text_of(msg: MessageIn) -> str:
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    return "\n".join(p.text for p in msg.content if p.type != "image_url")


def _past_message(msg: MessageIn) -> ChatMessage | None:
    """An earlier turn as sent to the model (text only: images go in the active turn alone);
    None for one that carries nothing."""
    text = _text_of(msg)
    if not text and isinstance(msg.content, list):
        text = IMAGE_ONLY_TEXT
    calls = tuple(
        ToolCall(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls or ()
    )
    if not (text or calls or msg.role in ("tool", "function")):
        return None
    return ChatMessage(
        role=_role(msg),
        content=text,
        name=msg.name,
        tool_call_id=msg.tool_call_id,
        tool_calls=calls,
    )


def _role(msg: MessageIn) -> Role:
    if msg.role in ("function", "tool"):
        return "tool"
    return "assistant" if msg.role == "assistant" else "user"


class ChatCompletionsEndpoint:
    """An ASGI app mounted on the route (so it can race the run against client disconnect)."""

    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw
        cfg = gw.config.gateway.http
        self.cfg = cfg.endpoints.chat_completions
        self.body_timeout = cfg.body_timeout_ms / 1000
        self.keepalive = cfg.sse_keepalive_ms / 1000

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        headers: dict[str, str] = {}
        try:
            require_auth(request)
            body = await read_body(
                request, limit=self.cfg.max_body_bytes, timeout=self.body_timeout
            )
            req = parse_request(body)
            if req.model_extra:
                log.debug("ignored fields", extra={"fields": sorted(req.model_extra)})
            params = await self._params(request, req)
            headers["x-openclaw-session-key"] = params.session_key or params.ephemeral_key or ""
            if req.stream:
                # Once the stream has started, an error ends it the chat completions way.
                scope[wire.STREAM_ERRORS] = wire.CHAT_COMPLETIONS_STREAM
                await _race_disconnect(receive, self._stream(req, params, headers, send))
            else:
                await _race_disconnect(receive, self._complete(req, params, headers, send))
        except ClientGone:
            return
        except OpenClawError as exc:
            exc.headers.update(headers)
            raise

    async def _params(self, request: Request, req: ChatCompletionRequest) -> RunParams:
        if req.n is not None and req.n != 1:
            raise InvalidRequestError("Only `n=1` is supported.", param="n")
        runtime = self.gw.runtime
        header_agent = request.headers.get("x-openclaw-agent-id", "").strip()
        agent_id = header_agent or agent_from_model(req.model)
        agent = runtime.agents.get(agent_id)
        raw_key = request.headers.get("x-openclaw-session-key", "").strip()
        if raw_key:
            session_key: str | None = scope_key(raw_key, agent.id)
            if session_key is None or not is_valid_key(session_key):
                raise InvalidRequestError(
                    "Invalid `x-openclaw-session-key` header.", param="x-openclaw-session-key"
                )
        elif req.user and req.user.strip():
            session_key = user_key(agent.id, req.user)
        else:
            session_key = None
        # A new per-request key is made here so the response header can carry it.
        ephemeral = ephemeral_key(agent.id) if session_key is None else None

        system: list[str] = []
        turns: list[MessageIn] = []
        for msg in req.messages:
            if msg.role in ("system", "developer"):
                text = _text_of(msg)
                if text:
                    system.append(text)
            else:
                turns.append(msg)
        active_index = next(
            (
                i
                for i in range(len(turns) - 1, -1, -1)
                if turns[i].role in ("user", "tool", "function")
            ),
            None,
        )
        if active_index is None:
            raise InvalidRequestError("Missing user message in `messages`.", param="messages")
        active = turns[active_index]
        # Tool results answering one assistant message form one turn: the earlier ones travel
        # with the last, so the turn is stored whole (parallel tool calls).
        start = active_index
        if _role(active) == "tool":
            while start > 0 and _role(turns[start - 1]) == "tool":
                start -= 1
        history = [m for m in map(_past_message, turns[:start]) if m is not None]
        preceding = tuple(m for m in map(_past_message, turns[start:active_index]) if m)
        message = await self._active_message(active)
        max_tokens = req.max_tokens
        if req.max_completion_tokens is not None:
            max_tokens = min(max_tokens or req.max_completion_tokens, req.max_completion_tokens)
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        return RunParams(
            message=message,
            agent_id=agent.id,
            session_key=session_key,
            ephemeral_key=ephemeral,
            history=history,
            preceding=preceding,
            extra_system_prompt="\n\n".join(system) or None,
            tools=tuple(t.model_dump(exclude_unset=True) for t in req.tools or ()),
            tool_choice=req.tool_choice if req.tools else None,
            sampling=SamplingParams(
                temperature=req.temperature,
                top_p=req.top_p,
                max_tokens=max_tokens,
                stop=stop,
                seed=req.seed,
                presence_penalty=req.presence_penalty,
                frequency_penalty=req.frequency_penalty,
                response_format=req.response_format,
            ),
        )

    async def _active_message(self, msg: MessageIn) -> ChatMessage:
        role = _role(msg)
        if role == "user" and not msg.content:
            raise InvalidRequestError("The last user message has no content.", param="messages")
        if msg.content is None or isinstance(msg.content, str):
            return ChatMessage(role=role, content=msg.content or "", tool_call_id=msg.tool_call_id)
        urls = [image_url_of(p) for p in msg.content if p.type == "image_url"]
        texts = [p.text for p in msg.content if p.type != "image_url"]
        if not urls:
            return ChatMessage(role=role, content="\n".join(texts), tool_call_id=msg.tool_call_id)
        if role != "user":
            raise InvalidRequestError(
                "Images are accepted only in user messages.", param="messages"
            )
        images = await load_images(urls, self.cfg)
        text = "\n".join(t for t in texts if t) or IMAGE_ONLY_TEXT
        parts: tuple[ContentPart, ...] = (TextPart(text), *images)
        return ChatMessage(role="user", content=parts)

    async def _complete(
        self, req: ChatCompletionRequest, params: RunParams, headers: dict[str, str], send: Send
    ) -> None:
        result = await self.gw.runtime.runner.run(params)
        if not result.text and not result.tool_calls:
            raise UpstreamError("The model returned an empty reply.", code="empty_response")
        message: dict[str, Any] = {
            "role": "assistant",
            "content": result.text or (None if result.tool_calls else ""),
            "refusal": None,
        }
        if result.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in result.tool_calls]
        body = orjson.dumps(
            {
                "id": completion_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.model,
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
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *((k.encode(), v.encode()) for k, v in headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _stream(
        self, req: ChatCompletionRequest, params: RunParams, headers: dict[str, str], send: Send
    ) -> None:
        queue: asyncio.Queue[object] = asyncio.Queue(STREAM_QUEUE_SIZE)
        producer = asyncio.create_task(_produce(self.gw.runtime.runner.stream(params), queue))
        chunks = _Chunks(completion_id(), int(time.time()), req.model)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        started = False

        async def start() -> None:
            nonlocal started
            started = True
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        *SSE_HEADERS,
                        *((k.encode(), v.encode()) for k, v in headers.items()),
                    ],
                }
            )
            await _body(send, chunks.role())

        try:
            while True:
                try:
                    async with asyncio.timeout(self.keepalive):
                        item = await queue.get()
                except TimeoutError:
                    # Nothing for a while: open the stream (if not yet) and keep proxies awake.
                    if not started:
                        await start()
                    else:
                        await _body(send, _KEEPALIVE)
                    continue
                if isinstance(item, BaseException):
                    raise item
                if not started:
                    await start()
                if isinstance(item, TextDelta):
                    await _body(send, chunks.content(item.text))
                elif isinstance(item, ToolCallDelta):
                    await _body(send, chunks.tool_call(item))
                elif isinstance(item, RunResult):
                    if not item.text and not item.tool_calls:
                        raise UpstreamError(
                            "The model returned an empty reply.", code="empty_response"
                        )
                    tail = chunks.finish(finish_reason(item))
                    if include_usage:
                        tail += chunks.usage(item.usage.as_dict())
                    await _body(send, tail + _DONE, more=False)
                    return
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


async def _produce(events: Any, queue: asyncio.Queue[object]) -> None:
    """Runs the agent in its own task so the sender can wait on the queue with a timeout
    (waiting on the generator itself with a timeout would cancel the run)."""
    try:
        async with contextlib.aclosing(events) as stream:
            async for item in stream:
                await queue.put(item)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await queue.put(exc)


async def _body(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _race_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Run ``work`` in this task; a client disconnect first cancels it and raises ClientGone."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                task.cancel()
                return

    # Most requests end sooner than a client can be noticed leaving, so the watcher task is
    # only started once a request outlives WATCH_AFTER_SECONDS (a timer costs far less).
    watcher: asyncio.Task[None] | None = None

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.create_task(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            task.uncancel()
            raise ClientGone() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


def completion_id() -> str:
    return "chatcmpl-" + hex_id(12)


def finish_reason(result: RunResult) -> str:
    return (
        result.stop_reason
        if result.stop_reason in ("length", "tool_calls", "content_filter")
        else "stop"
    )


class _Chunks:
    """Pre-rendered SSE chunk framing: per delta only the text is encoded."""

    def __init__(self, cid: str, created: int, model: str) -> None:
        head = orjson.dumps(
            {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        )[:-1]
        self._head = b"data: " + head
        self._content_prefix = self._head + b',"choices":[{"index":0,"delta":{"content":'
        self._content_suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def role(self) -> bytes:
        return (
            self._head
            + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            + b'"logprobs":null,"finish_reason":null}]}\n\n'
        )

    def content(self, text: str) -> bytes:
        return self._content_prefix + orjson.dumps(text) + self._content_suffix

    def tool_call(self, delta: ToolCallDelta) -> bytes:
        call: dict[str, Any] = {"index": delta.index}
        if delta.id:
            call["id"] = delta.id
            call["type"] = "function"
        fn: dict[str, str] = {"arguments": delta.arguments}
        if delta.name:
            fn["name"] = delta.name
        call["function"] = fn
        return (
            self._head
            + b',"choices":[{"index":0,"delta":{"tool_calls":['
            + orjson.dumps(call)
            + b']},"logprobs":null,"finish_reason":null}]}\n\n'
        )

    def finish(self, reason: str) -> bytes:
        return (
            self._head
            + b',"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":'
            + orjson.dumps(reason)
            + b"}]}\n\n"
        )

    def usage(self, usage: dict[str, int]) -> bytes:
        return self._head + b',"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n"
