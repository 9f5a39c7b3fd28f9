"""Upstream failures translated at one boundary.

Every provider wraps its request, its stream's iteration and its close in ``upstream_errors``:
transport failures become the gateway's ``Upstream*`` errors by the most specific class in one
table (``raise ... from exc`` always).  What an upstream *says* went wrong, as an HTTP status or
as an error event in the middle of a stream, goes through ``upstream_error``: one table, so a
rate limit is a rate limit (429 with its ``Retry-After``) however it arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from openclaw.errors import (
    ContextTooLongError,
    OpenClawError,
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

# The status an error's kind stands for, when it comes without one (an error event mid-stream):
# OpenAI's error types and codes, Anthropic's error types.
KIND_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "request_too_large": 413,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "requests": 429,
    "tokens": 429,
    "insufficient_quota": 429,
    "api_error": 500,
    "server_error": 500,
    "overloaded_error": 529,
    "timeout_error": 504,
}
_CONTEXT_CODES = frozenset({"context_length_exceeded"})

_Transport = Callable[[BaseException, str], UpstreamError]


def _timed_out(exc: BaseException, label: str) -> UpstreamError:
    return UpstreamTimeoutError(f"{label}: the upstream did not answer in time")


def _no_connection(exc: BaseException, label: str) -> UpstreamError:
    reason = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    return UpstreamUnavailableError(f"{label}: cannot connect to the upstream ({reason})")


def _closed(exc: BaseException, label: str) -> UpstreamError:
    return UpstreamUnavailableError(f"{label}: the upstream closed the connection")


def _other(exc: BaseException, label: str) -> UpstreamError:
    return UpstreamUnavailableError(f"{label}: {type(exc).__name__}: {exc}")


# By class; the most specific one in an exception's MRO wins.
TRANSPORT_ERRORS: Mapping[type[BaseException], _Transport] = {
    aiohttp.ServerTimeoutError: _timed_out,
    TimeoutError: _timed_out,
    aiohttp.ClientConnectorError: _no_connection,
    aiohttp.ServerDisconnectedError: _closed,
    aiohttp.ClientPayloadError: _closed,
    aiohttp.ClientError: _other,
}


class upstream_errors:
    """Around a provider's request, stream iteration and close: transport failures as upstream
    errors.  The gateway's own errors, cancellation and anything not in the table pass.
    (A class rather than ``@contextmanager``: it is entered on every model call.)"""

    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, OpenClawError):
            return
        for cls in type(exc).__mro__:
            translate = TRANSPORT_ERRORS.get(cls)
            if translate is not None:
                raise translate(exc, self.label) from exc


def upstream_error(
    label: str,
    message: str,
    *,
    status: int | None = None,
    kind: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> OpenClawError:
    """What an upstream said went wrong (an HTTP ``status``, or an error event's ``kind`` and
    ``code`` when there is none) as the gateway's error for it."""
    text = f"{label}: {message}" if message else f"{label}: HTTP {status}"
    if code in _CONTEXT_CODES:
        return ContextTooLongError(text)
    if status is None:
        # An unnamed failure mid-answer counts as the upstream's own (500): retried before any
        # output, like a 5xx.
        status = KIND_STATUS.get(code or "") or KIND_STATUS.get(kind or "") or 500
    if status == 429:
        return UpstreamRateLimitError(text, retry_after=retry_after_seconds(headers or {}))
    if status in (401, 403):
        return UpstreamAuthError(text)
    if status in (408, 504):
        return UpstreamTimeoutError(text)
    if status >= 500:
        return UpstreamUnavailableError(text)
    if status == 404:
        return UpstreamError(text, code="upstream_not_found")
    return UpstreamBadRequestError(text)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_fields(err: Any) -> tuple[str, str | None, str | None]:
    """(message, kind, code) of an OpenAI- or Anthropic-style ``error`` object."""
    if not isinstance(err, dict):
        return str(err or ""), None, None
    kind, code = err.get("type"), err.get("code")
    return (
        str(err.get("message") or ""),
        kind if isinstance(kind, str) else None,
        code if isinstance(code, str) else None,
    )


def error_body(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, kind, code) out of an error response body, or its raw text."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace").strip()[:500], None, None
    if isinstance(data, dict):
        if "error" in data:
            return error_fields(data["error"])
        if isinstance(data.get("message"), str):
            return data["message"], None, None
    return body.decode("utf-8", "replace").strip()[:500], None, None


async def raise_for_response(resp: aiohttp.ClientResponse, label: str) -> None:
    """An HTTP error response as the gateway's error for it."""
    if resp.status < 400:
        return
    message, kind, code = error_body(await resp.read())
    raise upstream_error(
        label, message, status=resp.status, kind=kind, code=code, headers=resp.headers
    )


def malformed(label: str, what: str = "event") -> UpstreamError:
    return UpstreamError(f"{label}: malformed {what} from the upstream")


def text_field(value: Any) -> str | None:
    """A text field of an upstream's answer (content, finish reason, a call's id, name or
    arguments): a string, or None when absent.  Anything else is a TypeError, which the
    providers report as a malformed answer (a 502, or the stream's error event).  (Handed on,
    a number or a list broke the run far from here: relayed to the client as is, then a 500
    with a traceback, and the partial turn was lost.)"""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def not_an_event_stream(label: str, content_type: str) -> UpstreamError:
    """A 200 to a streamed call that carried no event and is not an event stream (a proxy's
    HTML page, a JSON body from a server that ignored ``stream``): said as such, rather than
    as a stream that "ended early"."""
    return UpstreamError(
        f"{label}: the upstream answered with {content_type or 'no content type'}, "
        "not an event stream"
    )
