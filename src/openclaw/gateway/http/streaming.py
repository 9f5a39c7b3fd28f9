"""What the OpenAI endpoints share around a run: racing it against the client leaving, and
relaying a streamed run as server-sent events with keep-alive comments.

``race_disconnect`` runs a request's work in its own task and cancels it when the client goes
away (``ClientGone`` then); ``SseStream`` opens the event stream at the first thing to send (or
the first keep-alive), and yields what a run produces, running the run in a task of its own so
that waiting for its next item may time out without cancelling it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

from starlette.requests import Request
from starlette.types import Message, Receive, Send

from openclaw.agents.runner import STREAM_QUEUE_SIZE, Emit
from openclaw.aio import reap
from openclaw.errors import UpstreamError
from openclaw.gateway.body import read_body
from openclaw.gateway.state import require_auth
from openclaw.logs import get_logger

T = TypeVar("T")
R = TypeVar("R")
log = get_logger("http")

# Most requests end sooner than a client can be noticed leaving, so the watcher is only started
# once a request outlives this (a timer costs far less than a task).
WATCH_AFTER_SECONDS = 0.05
SSE_HEADERS = (
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)
KEEPALIVE = b": keep-alive\n\n"
_KEEPALIVE = object()  # the keep-alive timer's item on a stream's queue


def empty_reply() -> UpstreamError:
    """A model that answered nothing at all (no text, no tool call)."""
    return UpstreamError("The model returned an empty reply.", code="empty_response")


async def read_request(
    request: Request,
    *,
    limit: int,
    timeout: float,  # noqa: ASYNC109 - the body read's own limit, as read_body
    parse: Callable[[bytes], R],
) -> tuple[str, R]:
    """The caller's identity and the parsed body: auth first (a stranger's body is never read),
    then the body within its limits; fields the model ignores are logged at debug (SDK versions
    add fields; refusing them broke clients)."""
    caller = await require_auth(request)
    req = parse(await read_body(request, limit=limit, timeout=timeout))
    extra = getattr(req, "model_extra", None)
    if extra:
        log.debug("ignored fields", extra={"fields": sorted(extra)})
    return caller, req


class ClientGone(Exception):
    """The client disconnected; nothing more is sent."""


async def race_disconnect(receive: Receive, work: Awaitable[T]) -> T:
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


async def send_json_body(send: Send, body: bytes, headers: Mapping[str, str]) -> None:
    """A whole 200 JSON response."""
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


class SseStream:
    """One ``text/event-stream`` response: opened (status, headers, ``opening``) with the first
    bytes sent; ``items`` relays a run."""

    def __init__(
        self, send: Send, headers: Mapping[str, str], keepalive: float, opening: bytes = b""
    ) -> None:
        self._send = send
        self._headers = headers
        self._keepalive = keepalive
        self._opening = opening
        self.started = False
        self._relaying = False
        self._held: list[bytes] = []

    async def _start(self) -> None:
        self.started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *SSE_HEADERS,
                    *((k.encode(), v.encode()) for k, v in self._headers.items()),
                ],
            }
        )
        if self._opening:
            await self._body(self._opening)

    async def _body(self, data: bytes, *, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def send(self, data: bytes, *, last: bool = False) -> None:
        """Send ``data``; while ``items`` has more already waiting, it is held and goes out
        with theirs in one write (a socket write per token was the stream's largest cost)."""
        if not last and self._relaying:
            self._held.append(data)
            return
        await self._flush(data, more=not last)

    async def _flush(self, data: bytes = b"", *, more: bool = True) -> None:
        if self._held:
            self._held.append(data)
            data = b"".join(self._held)
            self._held.clear()
        if not self.started:
            await self._start()
        if data or not more:
            await self._body(data, more=more)

    async def items(
        self,
        start: Callable[[Emit], Awaitable[object]],
        shown: tuple[type, ...],
        final: tuple[type, ...] = (),
    ) -> AsyncIterator[object]:
        """What the run ``start(emit)`` (``AgentRunner.execute``) emits of the types in
        ``shown``, as it comes (a failure of the run is raised here); a keep-alive comment
        (opening the stream first) whenever nothing came for the keep-alive interval, so proxies
        do not close an idle stream."""
        queue: asyncio.Queue[object] = asyncio.Queue(STREAM_QUEUE_SIZE)
        producer = asyncio.create_task(_produce(start, queue, shown))
        # One timer for the stream, not one per item: it checks how long the queue was idle.
        loop = asyncio.get_running_loop()
        last = loop.time()
        timer: asyncio.TimerHandle | None = None

        def tick() -> None:
            nonlocal timer
            idle = loop.time() - last
            if idle >= self._keepalive:
                if queue.empty():
                    queue.put_nowait(_KEEPALIVE)
                # Else the consumer is busy (a slow client): look again a whole interval on.
                idle = 0.0
            timer = loop.call_later(self._keepalive - idle, tick)

        timer = loop.call_later(self._keepalive, tick)
        self._relaying = True
        try:
            while True:
                if queue.empty() and self._held:
                    # What was held goes out before waiting.  (Nothing held: nothing is sent, so
                    # a run failing before its first token still gets a plain JSON error.)
                    await self._flush()
                # Without a coroutine when something is already there (most items under load).
                item = queue.get_nowait() if not queue.empty() else await queue.get()
                last = loop.time()
                if item is _KEEPALIVE:
                    await self._flush(b"" if not self.started else KEEPALIVE)
                    continue
                if isinstance(item, BaseException):
                    if self._held:
                        await self._flush()
                    raise item
                if self._held and isinstance(item, final):
                    # What the run said goes out before the endpoint's own last steps (storing
                    # a response may fail: the error event must follow the text, not lose it).
                    await self._flush()
                yield item
        finally:
            self._relaying = False
            if timer is not None:
                timer.cancel()
            producer.cancel()
            await reap(producer)


async def _produce(
    start: Callable[[Emit], Awaitable[object]],
    queue: asyncio.Queue[object],
    shown: tuple[type, ...],
) -> None:
    """Runs the agent in its own task so the sender can wait on the queue with a timeout
    (waiting on the run itself with a timeout would cancel it).  Only what the stream shows
    goes on the queue; a full queue (a slow client) holds the run back."""

    async def emit(item: object) -> None:
        if isinstance(item, shown):
            if queue.full():
                await queue.put(item)
            else:
                queue.put_nowait(item)

    try:
        await start(emit)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await queue.put(exc)
