"""A second baseline: the bare pass-through of ``hop_server.py`` as a plain ASGI app on the
gateway's own server stack (uvicorn with httptools on uvloop, the same pooled aiohttp client).

Run as its own process (``python benchmarks/asgi_hop_server.py --upstream-port N``;
``processes.spawn_asgi_hop``): prints ``READY <port>`` and relays every request's body to the
upstream's ``/v1/chat/completions`` (non-streaming replies only). Beside the aiohttp hop it says
what the server stack itself costs, so that the rest of the gateway's cost is its own work.
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from common import HOST


def serve(upstream_port: int) -> None:
    """Listen on a free port of 127.0.0.1, print ``READY <port>``, relay until killed."""
    import aiohttp
    import uvicorn
    import uvloop

    url = f"http://{HOST}:{upstream_port}/v1/chat/completions"
    fwd_headers = {"Content-Type": "application/json"}
    holder: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            holder["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await holder["s"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        async with holder["s"].post(url, data=b"".join(chunks), headers=fwd_headers) as up:
            data = await up.read()
            status, kind = up.status, up.headers.get("Content-Type", "application/json")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", kind.encode()),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    print(f"READY {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        app,
        loop="none",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=1024,
        # The benchmark's sequential client keeps one connection per target across rounds.
        timeout_keep_alive=3600,
    )
    uvloop.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-port", type=int, required=True)
    serve(parser.parse_args().upstream_port)
