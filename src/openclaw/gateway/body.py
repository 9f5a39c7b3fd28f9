"""Reading a request body within a size limit and a time limit."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from openclaw.errors import InvalidRequestError, PayloadTooLargeError, RequestTimeoutError


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"Request body is larger than the limit of {limit} bytes.")


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes:  # noqa: ASYNC109
    """The whole body; 413 on ``Content-Length`` before reading and again while reading, 408 when
    it does not arrive within ``timeout`` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequestError("Invalid Content-Length header.") from None
        if size > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(
            f"The request body did not arrive within {timeout:g} seconds."
        ) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
