"""The one error mapper: every exception becomes the right wire output."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from starlette.exceptions import HTTPException

from openclaw.errors import (
    AuthenticationError,
    GatewayBusyError,
    InternalError,
    InvalidRequestError,
    OpenClawError,
    RateLimitError,
    StoreUnavailableError,
    UpstreamRateLimitError,
)
from openclaw.gateway import wire


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(message)


def test_openclaw_errors_pass_through_unchanged() -> None:
    err = InvalidRequestError("bad", param="x")
    assert wire.to_error(err) is err


@pytest.mark.parametrize(
    ("status", "want_status", "want_type", "want_code"),
    [
        (404, 404, "invalid_request_error", "not_found"),
        (405, 405, "invalid_request_error", "method_not_allowed"),
        (400, 400, "invalid_request_error", None),
        (503, 503, "server_error", None),
    ],
)
def test_routing_errors_map_by_status(
    status: int, want_status: int, want_type: str, want_code: str | None
) -> None:
    exc = HTTPException(status, headers={"Allow": "GET"} if status == 405 else None)
    err = wire.to_error(exc, {"path": "/v1/x", "method": "DELETE"})
    assert err.http_status == want_status
    body = err.to_dict()["error"]
    assert (body["type"], body["code"]) == (want_type, want_code)
    if status == 405:
        assert err.headers == {"Allow": "GET"}
        assert body["message"] == "Method DELETE is not allowed on /v1/x."


def test_unexpected_errors_are_logged_once_and_shown_generically(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="openclaw"):
        err = wire.to_error(KeyError("secret detail"))
    assert isinstance(err, InternalError)
    assert "secret detail" not in orjson.dumps(err.to_dict()).decode()
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [KeyError]


@pytest.mark.parametrize(
    ("err", "status", "headers"),
    [
        (GatewayBusyError("busy"), 503, {b"retry-after": b"1"}),
        (StoreUnavailableError(), 503, {b"retry-after": b"1"}),
        (UpstreamRateLimitError("slow down", retry_after=2.2), 429, {b"retry-after": b"3"}),
        (AuthenticationError(), 401, {b"www-authenticate": b"Bearer"}),
    ],
)
async def test_json_before_the_response_starts(
    err: OpenClawError, status: int, headers: dict[bytes, bytes]
) -> None:
    sent = Sent()
    await wire.send_json(err, sent)
    start, body = sent.messages
    assert start["status"] == status
    got = dict(start["headers"])
    assert got[b"content-type"] == b"application/json"
    assert headers.items() <= got.items()
    assert orjson.loads(body["body"]) == err.to_dict()
    assert int(got[b"content-length"]) == len(body["body"])


async def test_a_started_stream_ends_in_its_own_format() -> None:
    err = StoreUnavailableError()
    sent = Sent()
    await wire.send_stream_end(err, {wire.STREAM_ERRORS: wire.CHAT_COMPLETIONS_STREAM}, sent)
    [end] = sent.messages
    assert end["more_body"] is False
    event, done = end["body"].split(b"\n\n")[:2]
    assert orjson.loads(event.removeprefix(b"data: ")) == err.to_dict()
    assert done == b"data: [DONE]"
    # A response of no declared stream format just ends.
    sent = Sent()
    await wire.send_stream_end(err, {}, sent)
    assert sent.messages == [{"type": "http.response.body", "body": b"", "more_body": False}]


def test_websocket_frames_and_close_codes() -> None:
    assert wire.ws_reply("r1", InvalidRequestError("no", param="x")) == {
        "type": "res",
        "id": "r1",
        "ok": False,
        "error": {
            "code": "invalid_request_error",
            "type": "invalid_request_error",
            "message": "no",
        },
    }
    assert wire.ws_reply(7, StoreUnavailableError())["error"]["code"] == "store_unavailable"
    assert AuthenticationError().ws_close() == (1008, "unauthorized: bad or missing gateway secret")
    assert RateLimitError("x").ws_close() == (1013, "too many failed authentication attempts")
    assert InvalidRequestError("y" * 500).ws_close() == (1008, "y" * 120)
