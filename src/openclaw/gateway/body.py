"""Reading a request body within a size limit and a time limit."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel
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


_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _too_big(value: object) -> bool:
    if isinstance(value, int):
        return not _INT_MIN <= value <= _INT_MAX
    if isinstance(value, str | float | bool | None):
        return False
    if isinstance(value, BaseModel):
        extra = value.__pydantic_extra__
        return any(map(_too_big, value.__dict__.values())) or (
            extra is not None and any(map(_too_big, extra.values()))
        )
    if isinstance(value, dict):
        return any(map(_too_big, value.values()))
    if isinstance(value, list | tuple):
        return any(map(_too_big, value))
    return False


# Every JSON integer of 18 digits or fewer fits in 64 bits: only a body with a run of 19 digits
# (digits mapped to "0", then one substring search: ~1.5 ms per MB) can hold a bigger one.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def check_integers(body: bytes, request: BaseModel) -> None:
    """400 when a validated request holds an integer beyond 64 bits anywhere.  Such a number
    validates wherever a request takes any JSON (tool parameters, ``tool_choice``, unknown
    fields), but cannot be written out again -- stored, echoed, sent upstream: orjson's integers
    are 64-bit.  The values are walked (a long string is one step) only when the raw ``body``
    has digits enough."""
    if _NINETEEN_DIGITS in body.translate(_DIGITS_AS_ZERO) and _too_big(request):
        raise InvalidRequestError("Integers in the request body must fit in 64 bits.")
