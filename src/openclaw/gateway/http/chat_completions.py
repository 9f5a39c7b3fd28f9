"""``POST /v1/chat/completions``: the OpenAI Chat Completions API as an ordinary agent run.

Order of checks, as the reference: path -> method (routing) -> auth -> body -> validation -> run.
The request becomes a run in ``chat_request``; the reply's shapes are ``chat_response``'s.  Errors
are raised; ``gateway.wire`` renders them (OpenAI-style JSON before the response starts; after a
stream has started, an SSE error event followed by ``[DONE]``).  A client that goes away cancels
the run, which closes the upstream call and stores the partial turn as aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar

import orjson
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from openclaw.agents.events import RunEvent, ToolFinished, ToolStarted
from openclaw.agents.runner import RunParams, RunResult
from openclaw.aio import reap
from openclaw.errors import OpenClawError, UpstreamError
from openclaw.gateway import wire
from openclaw.gateway.body import read_body
from openclaw.gateway.http.chat_request import SESSION_KEY_HEADER, run_params
from openclaw.gateway.http.chat_response import ChunkWriter, completion, completion_id
from openclaw.gateway.http.chat_response import finish_reason as finish_reason_of
from openclaw.gateway.openai_schema import ChatCompletionRequest, parse_request
from openclaw.gateway.state import GatewayState, require_auth
from openclaw.logs import get_logger
from openclaw.messages import TextDelta, ToolCallDelta

log = get_logger("chat")

STREAM_QUEUE_SIZE = 256
WATCH_AFTER_SECONDS = 0.05
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
TOOL_EVENTS_HEADER = "x-openclaw-tool-events"
_SHOWN: tuple[type, ...] = (TextDelta, ToolCallDelta, RunResult)
_SHOWN_WITH_TOOLS: tuple[type, ...] = (*_SHOWN, ToolStarted, ToolFinished)
_DONE = b"data: [DONE]\n\n"
_KEEPALIVE = b": keep-alive\n\n"
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected; nothing more is sent."""


def _empty_reply() -> UpstreamError:
    return UpstreamError("The model returned an empty reply.", code="empty_response")


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
            params = await run_params(request, req, self.gw.runtime.agents, self.cfg)
            headers[SESSION_KEY_HEADER] = params.target.key
            if req.stream:
                # Once the stream has started, an error ends it the chat completions way.
                scope[wire.STREAM_ERRORS] = wire.CHAT_COMPLETIONS_STREAM
                tool_events = self.cfg.tool_events or (
                    request.headers.get(TOOL_EVENTS_HEADER, "").strip().lower() in ("1", "true")
                )
                work = self._stream(req, params, headers, send, tool_events)
                await _race_disconnect(receive, work)
            else:
                await _race_disconnect(receive, self._complete(req, params, headers, send))
        except ClientGone:
            return
        except OpenClawError as exc:
            exc.headers.update(headers)
            raise

    async def _complete(
        self, req: ChatCompletionRequest, params: RunParams, headers: dict[str, str], send: Send
    ) -> None:
        result = await self.gw.runtime.runner.run(params)
        if not result.text and not result.tool_calls:
            raise _empty_reply()
        body = orjson.dumps(completion(result, completion_id(), int(time.time()), req.model))
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
        self,
        req: ChatCompletionRequest,
        params: RunParams,
        headers: dict[str, str],
        send: Send,
        tool_events: bool,
    ) -> None:
        queue: asyncio.Queue[object] = asyncio.Queue(STREAM_QUEUE_SIZE)
        shown = _SHOWN_WITH_TOOLS if tool_events else _SHOWN
        events = self.gw.runtime.runner.stream(params)
        producer = asyncio.create_task(_produce(events, queue, shown))
        chunks = ChunkWriter(completion_id(), int(time.time()), req.model)
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
            await _body(send, chunks.role)

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
                if not isinstance(item, RunResult):
                    await _body(send, chunks.render(item))  # type: ignore[arg-type]
                    continue
                if not item.text and not item.tool_calls:
                    raise _empty_reply()
                tail = chunks.finish(finish_reason_of(item))
                if include_usage:
                    tail += chunks.usage(item.usage.as_dict())
                await _body(send, tail + _DONE, more=False)
                return
        finally:
            producer.cancel()
            await reap(producer)


async def _produce(
    events: AsyncGenerator[RunEvent | RunResult, None],
    queue: asyncio.Queue[object],
    shown: tuple[type, ...],
) -> None:
    """Runs the agent in its own task so the sender can wait on the queue with a timeout
    (waiting on the generator itself with a timeout would cancel the run).  Only what the
    stream shows goes on the queue: deltas, tool events when asked for, and the result."""
    try:
        async with contextlib.aclosing(events) as stream:
            async for item in stream:
                if isinstance(item, shown):
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
