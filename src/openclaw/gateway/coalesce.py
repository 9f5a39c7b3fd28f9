"""uvicorn's HTTP protocol with each connection's writes of one event-loop step sent together.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and its body on ``http.response.body``: two ``send`` system calls, and
two segments for the client to read, for a reply that is complete a few microseconds later.
Here the connection's transport gathers what is written during one step of the loop and hands
it to the real transport once, at the end of that step (``call_soon``).  Nothing waits on a
timer: the bytes leave in the same loop iteration they were written in.  Measured on a bare
pass-through: about 7 us of CPU less per non-streaming request, 8% more requests per second.
A stream's events, written one by one as they come, leave as they did (one step, one write).

Held bytes never wait past their step, and never hide from flow control: beyond ``HOLD_LIMIT``
they go to the real transport at once (whose buffer then pauses a sender as it would have); a
client's end of input (a half-close) sends them before asyncio closes the connection; a
WebSocket upgrade hands the WebSocket protocol the real transport.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Coalescing pays for small writes; past this, bytes go on at once, so that the real
# transport's buffer limits (flow control: uvicorn pauses a sender on them) see every byte.
HOLD_LIMIT = 64 * 1024


class CoalescingTransport:
    """A transport that sends the writes of one loop step as one write.  Everything else is the
    real transport's (``__getattr__``); what closes the connection first sends what is held, and
    ``abort`` drops it, as the real transport would."""

    __slots__ = ("_held", "_held_size", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None
        self._held_size = 0

    @property
    def real(self) -> asyncio.Transport:
        """The transport written through."""
        return self._transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            self._held = [bytes(data)]
            self._held_size = len(data)
            self._loop.call_soon(self.flush)  # the end of the step
        else:
            self._held.append(bytes(data))
            self._held_size += len(data)
        if self._held_size > HOLD_LIMIT:
            self.flush()

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what is held to the real transport now (the scheduled flush then finds none)."""
        held, self._held = self._held, None
        self._held_size = 0
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        return self._held_size + self._transport.get_write_buffer_size()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._held_size = 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` writing through a ``CoalescingTransport`` (a WebSocket upgrade
    hands the real transport on to the WebSocket protocol)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._coalescing = CoalescingTransport(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(self._coalescing)  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        # The reply is whole: it leaves now (head and body still in one write), not at the end
        # of the loop step.
        self._coalescing.flush()
        super().on_response_complete()

    def eof_received(self) -> None:
        # The client half-closed after its request: asyncio closes the real transport when this
        # returns, so what the app wrote in this step goes out first (a reply written in the
        # same step as the end of input would otherwise be lost).
        self._coalescing.flush()
        super().eof_received()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol gets the real transport: frames are written as they are sent,
        # and its own end-of-input handling closes nothing held here.
        self._coalescing.flush()
        self.transport = self._coalescing.real
        super().handle_websocket_upgrade()
