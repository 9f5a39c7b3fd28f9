"""Shared plumbing for HTTP providers: one pooled aiohttp session each, and SSE line parsing.
(Their failures are translated in ``providers.errors``.)"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import orjson

from openclaw.config import defaults as d
from openclaw.config.schema import ProviderConfig
from openclaw.errors import UpstreamError


class HttpProviderBase:
    """Owns a keep-alive connection pool, created lazily inside the running loop."""

    def __init__(self, name: str, cfg: ProviderConfig) -> None:
        self.name = name
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=cfg.connect_timeout_seconds,
            sock_read=cfg.timeout_seconds or d.PROVIDER_READ_TIMEOUT_SECONDS,
        )
        self._image_models = {m.id for m in cfg.models if "image" in m.input}
        # Models of the HTTP APIs call tools unless their entry says ``tools: false``.
        self._no_tool_models = {m.id for m in cfg.models if m.tools is False}

    def supports_images(self, model: str) -> bool:
        return model in self._image_models

    def supports_tools(self, model: str) -> bool:
        return model not in self._no_tool_models

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
                timeout=self._timeout,
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def _label(self, model: str) -> str:
        return f"{self.name}/{model}"


# One SSE line (a chunk of a streamed answer) can hold a whole tool call's arguments.
MAX_SSE_LINE = 16 * 1024 * 1024
# aiohttp sends a bytes body up to this size in one write; beyond it, it warns that the write may
# hold the event loop (a request with large images): such a body goes as a file-like object,
# which it sends a chunk at a time.
LARGE_BODY = 1024 * 1024


def upload(body: bytes) -> bytes | io.BytesIO:
    """``body`` as an upstream request's ``data``: large ones streamed (see ``LARGE_BODY``)."""
    return io.BytesIO(body) if len(body) > LARGE_BODY else body


async def sse_data(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    """(event, data) pairs of a Server-Sent Events body; multi-line data joined by newlines.

    Read a block at a time and split here: one await per network read rather than one per
    line (an event is two lines) was a sixth of a relayed stream's CPU."""
    event = ""
    data: list[bytes] = []
    rest = b""
    async for block in content.iter_any():
        if rest:
            block = rest + block
        lines = block.split(b"\n")
        rest = lines.pop()  # the line still arriving
        if len(rest) > MAX_SSE_LINE:
            raise UpstreamError(f"the upstream sent an SSE line over {MAX_SSE_LINE} bytes")
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if data:
                    yield event, b"\n".join(data)
                event, data = "", []
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
            # comments (":") and other fields are ignored, as the SSE spec says
    line = rest[:-1] if rest.endswith(b"\r") else rest
    if line.startswith(b"data:"):
        data.append(line[6:] if line[5:6] == b" " else line[5:])
    if data:
        yield event, b"\n".join(data)
