"""Shared plumbing for HTTP providers: one pooled aiohttp session each, SSE line parsing, and the
translation of aiohttp failures and HTTP statuses into the gateway's upstream errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from openclaw.config import defaults as d
from openclaw.config.schema import ProviderConfig
from openclaw.errors import (
    ContextTooLongError,
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)


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

    def supports_images(self, model: str) -> bool:
        return model in self._image_models

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


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for_status(
    status: int, message: str, code: str | None, headers: Mapping[str, str], label: str
) -> UpstreamError | ContextTooLongError:
    """Translate an upstream HTTP status (and the error's code field) into a typed error."""
    text = f"{label}: {message}" if message else f"{label}: HTTP {status}"
    if code == "context_length_exceeded":
        return ContextTooLongError(text)
    if status == 429:
        return UpstreamRateLimitError(text, retry_after=retry_after_seconds(headers))
    if status in (401, 403):
        return UpstreamAuthError(text)
    if status in (408, 504):
        return UpstreamTimeoutError(text)
    if status >= 500:
        return UpstreamUnavailableError(text)
    if status == 404:
        return UpstreamError(text, code="upstream_not_found")
    return UpstreamBadRequestError(text)


def error_message(body: bytes) -> tuple[str, str | None]:
    """(message, code) out of an OpenAI- or Anthropic-style error body, or the raw text."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:500], None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        return str(err.get("message") or ""), code if isinstance(code, str) else None
    if isinstance(err, str):
        return err, None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return data["message"], None
    return body.decode("utf-8", "replace").strip()[:500], None


async def raise_for_response(resp: aiohttp.ClientResponse, label: str) -> None:
    if resp.status < 400:
        return
    message, code = error_message(await resp.read())
    raise error_for_status(resp.status, message, code, resp.headers, label)


def translate_client_error(exc: BaseException, label: str) -> UpstreamError:
    """aiohttp/asyncio failures as upstream errors (by type, never by message text)."""
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return UpstreamTimeoutError(f"{label}: the upstream did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailableError(f"{label}: cannot connect to the upstream ({exc.os_error})")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return UpstreamUnavailableError(f"{label}: the upstream closed the connection")
    return UpstreamUnavailableError(f"{label}: {type(exc).__name__}: {exc}")


async def sse_data(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, bytes]]:
    """(event, data) pairs of a Server-Sent Events body; multi-line data joined by newlines."""
    event = ""
    data: list[bytes] = []
    async for raw in content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield event, b"\n".join(data)
            event, data = "", []
            continue
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode()
        # comments (":") and other fields are ignored, as the SSE spec says
    if data:
        yield event, b"\n".join(data)
