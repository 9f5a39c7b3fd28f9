"""Remote images: bodies read whole within a cap, and no address that leads back into private
networks counts as public."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from openclaw.safe_http import FetchError, is_public_address, read_capped


async def test_remote_image_bodies_are_read_whole_and_capped() -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * 2_000_000

    async def image(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        for i in range(0, len(big), 100_000):
            await resp.write(big[i : i + 100_000])
        return resp

    app = web.Application()
    app.router.add_get("/big.png", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/big.png") as resp:
                assert await read_capped(resp, 3_000_000) == big
            async with session.get(f"http://127.0.0.1:{port}/big.png") as resp:
                with pytest.raises(FetchError):
                    await read_capped(resp, 1_000_000)
    finally:
        await runner.cleanup()


def test_addresses_embedding_ipv4_are_not_public() -> None:
    for addr in (
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "::7f00:1",
        "::ffff:127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
    ):
        assert not is_public_address(addr), addr
    assert is_public_address("8.8.8.8")
