"""The benchmark's upstream: a minimal deterministic OpenAI-compatible server.

Run as its own process (``python benchmarks/upstream_server.py``; ``processes.spawn_upstream``):
listens on a free port of 127.0.0.1, prints ``READY <port>``, and answers every
``POST /v1/chat/completions`` at once with the same small completion, streaming (chunked SSE,
with a usage chunk when ``stream_options.include_usage``) or not.  A raw asyncio protocol on
httptools + uvloop, so its own cost per request is tiny next to what is measured through it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from common import HOST, REPLY, REPLY_WORDS, UPSTREAM_MODEL

CREATED = 1_700_000_000
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


def replies(tokens: int = 0) -> tuple[bytes, bytes, bytes]:
    """(non-streaming response, streaming response, streaming response with usage); with
    ``tokens``, streams of that many content chunks."""
    import orjson

    usage = {"prompt_tokens": 5, "completion_tokens": len(REPLY_WORDS), "total_tokens": 10}
    body = orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": UPSTREAM_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    )
    plain = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": UPSTREAM_MODEL,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }

    def framed(events: list[bytes]) -> bytes:
        out = [
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        ]
        for ev in events:
            out.append(f"{len(ev):x}\r\n".encode() + ev + b"\r\n")
        out.append(b"0\r\n\r\n")
        return b"".join(out)

    def sse(obj: Any) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    words = [f" tok{i}" for i in range(tokens)] if tokens else REPLY_WORDS
    events = [sse(chunk({"role": "assistant", "content": ""}))]
    events += [sse(chunk({"content": w})) for w in words]
    events.append(sse(chunk({}, "stop")))
    with_usage = [*events, sse({**chunk({}), "choices": [], "usage": usage})]
    done = b"data: [DONE]\n\n"
    return plain, framed([*events, done]), framed([*with_usage, done])


def serve(tokens: int = 0, token_delay: float | None = None) -> None:
    """Listen, print ``READY <port>``, answer until killed.  ``token_delay``: streams send each
    chunk on its own, that many seconds apart (0: each in its own write, as a model server
    flushes every token; None: the whole stream in one write)."""
    import httptools
    import orjson
    import uvloop

    plain, streamed, streamed_usage = replies(tokens)

    async def trickle(transport: asyncio.Transport, reply: bytes, close: bool) -> None:
        head, _, rest = reply.partition(b"\r\n\r\n")
        transport.write(head + b"\r\n\r\n")
        # Each SSE event is one chunk of the chunked encoding, ending "\n\n" + "\r\n".
        pieces = rest.split(b"\n\n\r\n")
        for piece in pieces[:-1]:
            await asyncio.sleep(token_delay)
            if transport.is_closing():
                return
            transport.write(piece + b"\n\n\r\n")
        transport.write(pieces[-1])
        if close:
            transport.close()

    tasks: set[asyncio.Future[None]] = set()

    class Upstream(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.body: list[bytes] = []
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                assert self.transport is not None
                self.transport.close()

        def on_message_begin(self) -> None:
            self.url = b""
            self.body = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            assert self.transport is not None
            if not self.url.startswith(b"/v1/chat/completions"):
                reply = NOT_FOUND
            else:
                try:
                    req = orjson.loads(b"".join(self.body))
                except orjson.JSONDecodeError:
                    req = None
                if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
                    reply = BAD_REQUEST
                elif req.get("stream") is True:
                    opts = req.get("stream_options")
                    usage = isinstance(opts, dict) and opts.get("include_usage") is True
                    reply = streamed_usage if usage else streamed
                else:
                    reply = plain
            if token_delay is not None and reply is not plain and reply.startswith(b"HTTP/1.1 200"):
                task = asyncio.ensure_future(
                    trickle(self.transport, reply, not self.parser.should_keep_alive())
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                return
            self.transport.write(reply)
            if not self.parser.should_keep_alive():
                self.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, HOST, 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream-tokens", type=int, default=0, help="content chunks per stream")
    parser.add_argument("--token-delay", type=float, default=None, help="seconds between chunks")
    args = parser.parse_args()
    serve(args.stream_tokens, args.token_delay)
