"""Playing one behaviour as the response to one model request, the same way on both APIs.

The wire format (``openai_wire`` / ``anthropic_wire``) renders the bodies and stream writes;
this module does the I/O: error responses, ``Drop`` / ``Hang``, delays, the ``StreamAbort`` /
``StreamError`` cut-offs and counting the content chunks sent (for ``Disconnect``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import orjson
from aiohttp import web

from tests.upstream.behaviours import (
    Answer,
    Behaviour,
    Drop,
    Hang,
    HttpError,
    StreamAbort,
    StreamError,
    ToolCalls,
)
from tests.upstream.records import RecordedRequest
from tests.upstream.wire import JsonReply, StreamReply, Wire

__all__ = ["Exchange", "json_response", "respond"]


def json_response(
    status: int, payload: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


class Exchange:
    """Per-request state shared by a handler and its disconnect bookkeeping."""

    __slots__ = ("behaviour", "chunks", "record", "request", "resp", "self_closed", "stream")

    def __init__(
        self, request: web.Request, record: RecordedRequest, behaviour: Behaviour, stream: bool
    ) -> None:
        self.request = request
        self.record = record
        self.behaviour = behaviour
        self.stream = stream
        self.resp: web.StreamResponse | None = None  # once a stream is prepared
        self.chunks = 0  # content chunks written
        self.self_closed = False

    def close_connection(self) -> None:
        """Close the TCP connection ourselves (flushing what was written, nothing more)."""
        self.self_closed = True
        transport = self.request.transport
        if transport is not None:
            transport.close()


async def _forever() -> NoReturn:
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


async def respond(
    wire: Wire, ex: Exchange, default_model: str, new_id: Callable[[str], str]
) -> web.StreamResponse:
    """Answer ``ex`` (a valid request of ``wire``'s API) as its behaviour says.

    ``new_id(prefix)`` makes the response id; it is only called for an actual answer.
    """
    b = ex.behaviour
    if isinstance(b, HttpError):
        return json_response(b.status, wire.error_body(b), b.headers)
    if isinstance(b, Drop):
        ex.close_connection()
        return web.Response()  # never sent: the transport is closing
    if isinstance(b, Hang):
        await _forever()
    if isinstance(b, Answer) and not ex.stream:
        if b.first_token_delay > 0:
            await asyncio.sleep(b.first_token_delay)
        if isinstance(b, StreamAbort):
            ex.close_connection()
            return web.Response()
        if isinstance(b, StreamError):
            return json_response(500, wire.error_body(b.http_error()))
    body: dict[str, Any] = ex.record.body
    model = body.get("model") or default_model
    rid = new_id(wire.id_prefix)
    if isinstance(b, ToolCalls):
        reply = wire.tool_calls(body, b, rid, model, ex.stream)
    else:
        reply = wire.answer(body, b, rid, model, ex.stream)
    if isinstance(reply, JsonReply):
        return json_response(reply.status, reply.payload)
    return await _stream(wire, ex, reply)


async def _stream(wire: Wire, ex: Exchange, reply: StreamReply) -> web.StreamResponse:
    """Send ``reply`` with the behaviour's delays and cut-off."""
    b = ex.behaviour
    timing = b if isinstance(b, Answer) else Answer()
    cut_after = b.after if isinstance(b, (StreamAbort, StreamError)) else None
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    ex.resp = resp
    await resp.prepare(ex.request)
    await resp.write(reply.head)
    if timing.first_token_delay > 0:
        await asyncio.sleep(timing.first_token_delay)
    for frame in reply.frames:
        if frame.content:
            if ex.chunks == cut_after:
                break
            if ex.chunks and timing.chunk_delay > 0:
                await asyncio.sleep(timing.chunk_delay)
        await resp.write(frame.data)
        if frame.content:
            ex.chunks += 1
    if isinstance(b, StreamAbort):
        ex.close_connection()
        return resp
    for data in [wire.stream_error(b)] if isinstance(b, StreamError) else reply.tail:
        await resp.write(data)
    await resp.write_eof()
    return resp
