"""The one place where errors meet the wire: JSON bodies, SSE error events, WebSocket frames."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from openclaw.errors import (
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
    OpenClawError,
)
from openclaw.logs import get_logger

log = get_logger("gateway")


class JSONResponse(Response):
    """orjson-encoded JSON: the hot path encodes every response body."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: OpenClawError) -> Response:
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)


def sse_error(exc: OpenClawError) -> bytes:
    """A mid-stream failure: an error event, then the terminator clients wait for."""
    return b"data: " + orjson.dumps(exc.to_dict()) + b"\n\ndata: [DONE]\n\n"


def ws_error(exc: OpenClawError) -> dict[str, Any]:
    err = exc.to_dict()["error"]
    return {"code": err["code"] or err["type"], "type": err["type"], "message": err["message"]}


def as_wire_error(exc: BaseException) -> OpenClawError:
    """Any exception as a client-safe ``OpenClawError`` (unexpected ones are logged, not shown)."""
    if isinstance(exc, OpenClawError):
        return exc
    log.error("unhandled error", exc_info=exc)
    return InternalError()


async def handle_openclaw_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenClawError)
    return error_response(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(
            MethodNotAllowedError(
                f"Method {request.method} is not allowed on {request.url.path}.",
                headers=dict(exc.headers or {}),
            )
        )
    if exc.status_code == 404:
        return error_response(NotFoundError(f"Not found: {request.url.path}"))
    err = OpenClawError(exc.detail, headers=dict(exc.headers or {}))
    err_body = err.to_dict()
    err_body["error"]["type"] = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return JSONResponse(err_body, status_code=exc.status_code, headers=err.headers)
