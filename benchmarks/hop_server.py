"""The baseline the gateway's throughput is judged against: a bare aiohttp pass-through hop.

Run as its own process (``python benchmarks/hop_server.py --upstream-port N``;
``processes.spawn_hop``): listens on a free port of 127.0.0.1, prints ``READY <port>``, and for
every ``POST /v1/chat/completions`` reads the body, POSTs it to the upstream with one pooled
``aiohttp.ClientSession`` (uvloop) and returns the reply, streamed through if it is SSE.
"""

from __future__ import annotations

import argparse
import asyncio

from common import HOST


def serve(upstream_port: int) -> None:
    """Listen, print ``READY <port>``, forward to ``upstream_port`` until killed."""
    import aiohttp
    import uvloop
    from aiohttp import web

    url = f"http://{HOST}:{upstream_port}/v1/chat/completions"
    fwd_headers = {"Content-Type": "application/json"}
    holder: dict[str, aiohttp.ClientSession] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with holder["s"].post(url, data=body, headers=fwd_headers) as up:
            if up.content_type == "text/event-stream":
                resp = web.StreamResponse(status=up.status)
                resp.content_type = "text/event-stream"
                await resp.prepare(request)
                async for data in up.content.iter_any():
                    await resp.write(data)
                await resp.write_eof()
                return resp
            data = await up.read()
            return web.Response(body=data, status=up.status, content_type=up.content_type)

    async def main() -> None:
        holder["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-port", type=int, required=True)
    serve(parser.parse_args().upstream_port)
