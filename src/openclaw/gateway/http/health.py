"""``GET /health``: no auth, no secrets, no I/O; answers as fast as the server can."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

_OK = b'{"status":"ok"}'


async def health(request: Request) -> Response:
    return Response(_OK, media_type="application/json", headers={"Cache-Control": "no-store"})
