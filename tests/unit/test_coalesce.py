"""The coalescing transport: the writes of one loop step leave as one write, in order, and
nothing held is lost or sent after the connection is closed or aborted."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from openclaw.gateway.coalesce import HOLD_LIMIT, CoalescingHttpToolsProtocol, CoalescingTransport


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        assert not self.closing, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


async def next_step() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_step_leave_as_one_write_in_order() -> None:
    real = RecordingTransport()
    t = CoalescingTransport(real, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(bytearray(b"{"))
    t.write(memoryview(b"}"))
    assert real.writes == []  # held until the end of this step
    assert t.get_write_buffer_size() == 7 + 21
    await next_step()
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
    t.writelines([b"a", b"b"])
    await next_step()
    assert real.writes[1:] == [b"ab"]
    assert t.get_write_buffer_size() == 7


async def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    real = RecordingTransport()
    t = CoalescingTransport(real, asyncio.get_running_loop())
    t.write(b"last bytes")
    t.close()
    assert real.writes == [b"last bytes"]
    assert real.events == ["close"]
    await next_step()  # the scheduled flush finds nothing more to send
    assert real.writes == [b"last bytes"]

    real = RecordingTransport()
    t = CoalescingTransport(real, asyncio.get_running_loop())
    t.write(b"never sent")
    t.abort()
    await next_step()
    assert real.writes == [] and real.events == ["abort"]


async def test_eof_follows_the_held_bytes_and_the_rest_is_the_real_transport() -> None:
    real = RecordingTransport()
    t = CoalescingTransport(real, asyncio.get_running_loop())
    t.write(b"x")
    t.write_eof()
    assert real.writes == [b"x"] and real.events == ["eof"]
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)
    assert t.is_closing() is False


async def test_a_connection_closed_under_it_drops_the_held_bytes() -> None:
    real = RecordingTransport()
    t = CoalescingTransport(real, asyncio.get_running_loop())
    t.write(b"late")
    real.closing = True  # the peer went away before the step ended
    await next_step()
    assert real.writes == []


async def test_past_the_hold_limit_bytes_go_on_at_once() -> None:
    """Flow control sees every byte: a sender writing much within one step is not held (the
    real transport's buffer then pauses it as it would have)."""
    real = RecordingTransport()
    t = CoalescingTransport(real, asyncio.get_running_loop())
    t.write(b"h" * 100)
    t.write(b"b" * HOLD_LIMIT)
    assert real.writes == [b"h" * 100 + b"b" * HOLD_LIMIT]
    assert t.get_write_buffer_size() == 7
    t.write(b"tail")
    await next_step()
    assert real.writes[1:] == [b"tail"]


@contextlib.asynccontextmanager
async def serving(body: bytes) -> AsyncIterator[int]:
    """A uvicorn server on the coalescing protocol answering every request with ``body``; its
    port."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, http=CoalescingHttpToolsProtocol, lifespan="off", log_config=None)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize("body_size", [0, 10, 300_000])
async def test_a_real_server_answers_whole_through_it(body_size: int) -> None:
    """Status, headers and body arrive whole, on a keep-alive connection, for a small, an empty
    and a large body."""
    body = b"y" * body_size
    async with serving(body) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert f"content-length: {body_size}".encode() in head
            assert await reader.readexactly(body_size) == body
        writer.close()


async def test_a_client_that_half_closes_after_its_request_gets_the_reply() -> None:
    """``nc -N`` and some health checkers shut their side down after the request: asyncio closes
    the connection once the end of input is handled, and the reply written in that same step
    must already be on its way."""
    async with serving(b"ok") as port:
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.write_eof()
            reply = await reader.read()
            writer.close()
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")
