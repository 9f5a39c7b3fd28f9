"""The benchmark's HTTP clients: what a request looks like and the two ways of sending it.

* ``Target``     where a series of requests goes, and their bytes (built once, reused);
* ``Conn``       a blocking raw-socket HTTP/1.1 keep-alive connection for sequential requests
                 (latency, TTFT): parses just enough of a response, so its own cost is tiny and
                 the same for every target;
* ``run_load``   ``CONNECTIONS`` keep-alive connections on the running (uvloop) event loop, each
                 sending its next request as soon as the previous response is in (throughput).

Measurement (rounds, CPU, statistics) is in ``measure.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common import CONNECTIONS, HOST, PROMPT, TOKEN, USER_POOL, bench_user

if TYPE_CHECKING:
    from processes import Proc  # processes imports this module (its health check)

CONTENT_MARKER = b'"delta":{"content":"'  # the first content token of a streamed reply


def build_request(
    method: str, path: str, body: bytes | None, port: int, auth: bool = True
) -> bytes:
    """The bytes of one HTTP/1.1 request (keep-alive, bearer token unless ``auth`` is off)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def chat_body(model: str, *, stream: bool = False, user: str | None = None) -> bytes:
    """A one-message chat completion request body."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    if user is not None:
        body["user"] = user
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Target:
    """Where a series of requests goes and what they look like."""

    name: str
    port: int
    model: str  # "openclaw" for gateways, the upstream's model for direct / hop
    stateful: bool = False
    proc: Proc | None = None
    _i: int = 0
    _pool: list[bytes] = field(default_factory=list)

    def requests(self, *, stream: bool = False) -> Callable[[], bytes]:
        """A supplier of request bytes; stateful targets cycle over the user pool."""
        if not self.stateful:
            req = build_request(
                "POST", "/v1/chat/completions", chat_body(self.model, stream=stream), self.port
            )
            return lambda: req
        if not self._pool:
            self._pool = [
                build_request(
                    "POST",
                    "/v1/chat/completions",
                    chat_body(self.model, user=bench_user(i)),
                    self.port,
                )
                for i in range(USER_POOL)
            ]

        def nxt() -> bytes:
            req = self._pool[self._i % USER_POOL]
            self._i += 1
            return req

        return nxt


class Conn:
    """A blocking HTTP/1.1 keep-alive connection that parses just enough of a response."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(262_144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while (j := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:j])
        del self.buf[: j + 2]
        return line

    def request(self, req: bytes, marker: bytes | None = None) -> tuple[int, bytes, float | None]:
        """(status, body, perf_counter() when ``marker`` was first seen in the body)."""
        self.sock.sendall(req)
        buf = self.buf
        while (i := buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(buf[:i]).lower()
        del buf[: i + 4]
        status = int(head[9:12])
        seen: float | None = None
        cl = head.find(b"\r\ncontent-length:")
        if cl >= 0:
            end = head.find(b"\r\n", cl + 2)
            n = int(head[cl + 17 : end if end >= 0 else None])
            while len(buf) < n:
                self._fill()
            body = bytes(buf[:n])
            del buf[:n]
            if marker is not None and marker in body:
                seen = time.perf_counter()
            return status, body, seen
        if b"transfer-encoding: chunked" not in head:
            raise RuntimeError(f"unsupported response framing: {head!r}")
        parts: list[bytes] = []
        while True:
            size = int(self._line().split(b";")[0], 16)
            if size == 0:
                while self._line():  # trailers, then the empty line
                    pass
                break
            while len(buf) < size + 2:
                self._fill()
            data = bytes(buf[:size])
            del buf[: size + 2]
            if marker is not None and seen is None and marker in data:
                seen = time.perf_counter()
            parts.append(data)
        return status, b"".join(parts), seen


class LoadRun:
    """The shared state of one load: what to send, until when, and what came back."""

    def __init__(self, make: Callable[[], bytes], total: int, duration: float) -> None:
        self.make = make
        self.total = total
        self.deadline = time.perf_counter() + duration
        self.issued = 0
        self.done = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.open = 0
        self.finished: asyncio.Future[None] | None = None

    def more(self) -> bool:
        return self.issued < self.total and time.perf_counter() < self.deadline


class _LoadConn(asyncio.Protocol):
    """One keep-alive connection: send, read one content-length response, send the next."""

    def __init__(self, run: LoadRun) -> None:
        self.run = run
        self.buf = bytearray()
        self.need = -1
        self.status = 0
        self.t0 = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.run.open += 1
        self._send()

    def _send(self) -> None:
        run = self.run
        assert self.transport is not None
        if not run.more():
            self.transport.close()
            return
        run.issued += 1
        req = run.make()
        self.t0 = time.perf_counter()
        self.transport.write(req)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(buf[:i]).lower()
            del buf[: i + 4]
            self.status = int(head[9:12])
            cl = head.find(b"\r\ncontent-length:")
            if cl < 0:
                self.run.errors += 1
                assert self.transport is not None
                self.transport.close()
                return
            end = head.find(b"\r\n", cl + 2)
            self.need = int(head[cl + 17 : end if end >= 0 else None])
        if len(buf) < self.need:
            return
        del buf[: self.need]
        self.need = -1
        run = self.run
        run.done += 1
        run.latencies.append(time.perf_counter() - self.t0)
        if self.status != 200:
            run.errors += 1
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        run.open -= 1
        if self.need >= 0 or exc is not None:
            run.errors += 1
        if run.open == 0 and run.finished is not None and not run.finished.done():
            run.finished.set_result(None)


async def run_load(
    port: int,
    make: Callable[[], bytes],
    total: int,
    duration: float,
    connections: int = CONNECTIONS,
) -> LoadRun:
    """``total`` requests from ``make`` (or fewer, once ``duration`` s are up) over
    ``connections`` connections to ``port``; non-streaming (content-length) responses only."""
    loop = asyncio.get_running_loop()
    run = LoadRun(make, total, duration)
    run.finished = loop.create_future()
    await asyncio.gather(
        *(loop.create_connection(lambda: _LoadConn(run), HOST, port) for _ in range(connections))
    )
    await asyncio.wait_for(run.finished, duration + 30)
    return run
