"""One table for upstream failures: transport exceptions by class, and what an upstream says
went wrong by status or (mid-stream) by the error's type and code."""

from __future__ import annotations

import aiohttp
import pytest

from openclaw.errors import (
    ContextTooLongError,
    OpenClawError,
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from openclaw.providers.errors import error_body, upstream_error, upstream_errors


@pytest.mark.parametrize(
    ("exc", "want"),
    [
        (aiohttp.ServerTimeoutError(), UpstreamTimeoutError),
        (TimeoutError(), UpstreamTimeoutError),
        (aiohttp.ServerDisconnectedError(), UpstreamUnavailableError),
        (aiohttp.ClientPayloadError("cut"), UpstreamUnavailableError),
        (aiohttp.ClientOSError(104, "reset"), UpstreamUnavailableError),
    ],
)
def test_transport_failures_by_their_most_specific_class(
    exc: BaseException, want: type[OpenClawError]
) -> None:
    with pytest.raises(want) as info, upstream_errors("p/m"):
        raise exc
    assert info.value.__cause__ is exc
    assert info.value.message.startswith("p/m: ")


def test_what_is_not_a_transport_failure_passes() -> None:
    with pytest.raises(KeyError), upstream_errors("p/m"):
        raise KeyError("bug")
    err = UpstreamBadRequestError("already ours")
    with pytest.raises(UpstreamBadRequestError) as info, upstream_errors("p/m"):
        raise err
    assert info.value is err


@pytest.mark.parametrize(
    ("status", "kind", "code", "want", "http"),
    [
        (429, None, None, UpstreamRateLimitError, 429),
        (None, "rate_limit_error", None, UpstreamRateLimitError, 429),  # Anthropic event
        (None, None, "rate_limit_exceeded", UpstreamRateLimitError, 429),  # OpenAI event
        (None, "overloaded_error", None, UpstreamUnavailableError, 502),
        (503, None, None, UpstreamUnavailableError, 502),
        (401, None, None, UpstreamAuthError, 502),
        (None, "authentication_error", None, UpstreamAuthError, 502),
        (504, None, None, UpstreamTimeoutError, 504),
        (400, None, "context_length_exceeded", ContextTooLongError, 400),
        (None, None, "context_length_exceeded", ContextTooLongError, 400),
        (400, "invalid_request_error", None, UpstreamBadRequestError, 400),
        (None, None, None, UpstreamUnavailableError, 502),  # an unnamed failure mid-answer
    ],
)
def test_statuses_and_error_events_share_one_table(
    status: int | None, kind: str | None, code: str | None, want: type, http: int
) -> None:
    err = upstream_error("p/m", "it broke", status=status, kind=kind, code=code)
    assert type(err) is want
    assert err.http_status == http
    assert err.message == "p/m: it broke"


def test_a_rate_limit_keeps_its_retry_after() -> None:
    err = upstream_error("p/m", "slow", status=429, headers={"Retry-After": "7"})
    assert err.headers == {"Retry-After": "7"}


def test_error_bodies_of_both_apis() -> None:
    assert error_body(b'{"error": {"message": "m", "type": "t", "code": "c"}}') == ("m", "t", "c")
    assert error_body(
        b'{"type": "error", "error": {"type": "overloaded_error", "message": "o"}}'
    ) == (
        "o",
        "overloaded_error",
        None,
    )
    assert error_body(b"<html>bad gateway</html>") == ("<html>bad gateway</html>", None, None)
