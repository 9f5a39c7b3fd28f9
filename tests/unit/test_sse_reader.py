"""The upstream SSE reader: events however the bytes are cut into network reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from openclaw.errors import UpstreamError
from openclaw.providers import http as provider_http
from openclaw.providers.http import sse_data

BODY = (
    b": a comment\r\n"
    b"event: message_start\r\n"
    b'data: {"a": 1}\r\n'
    b"\r\n"
    b"data: line one\n"
    b"data:line two\n"
    b"\n"
    b"retry: 10\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
    b"data: no blank line at the end"
)
EVENTS = [
    ("message_start", b'{"a": 1}'),
    ("", b"line one\nline two"),
    ("", b"[DONE]"),
    ("", b"no blank line at the end"),
]


class Reads:
    """A stand-in for ``aiohttp.StreamReader.iter_any``: the body in the given pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self) -> Any:
        for piece in self.pieces:
            await asyncio.sleep(0)
            yield piece


async def events(pieces: list[bytes]) -> list[tuple[str, bytes]]:
    return [e async for e in sse_data(Reads(pieces))]  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(BODY)])
async def test_events_whatever_the_reads(size: int) -> None:
    pieces = [BODY[i : i + size] for i in range(0, len(BODY), size)]
    assert await events(pieces) == EVENTS


async def test_a_line_longer_than_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provider_http, "MAX_SSE_LINE", 10)
    with pytest.raises(UpstreamError, match="SSE line"):
        await events([b"data: " + b"x" * 20])
