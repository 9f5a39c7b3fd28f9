"""The one place where errors meet the wire.

Endpoints, WebSocket methods and the runner only raise.  Here an exception becomes:

* before an HTTP response has started: an OpenAI-style JSON body with the error's status and
  headers (``send_json``);
* after a streamed response has started: the stream's own error event and end, which differ per
  API (``StreamErrors``; chat completions send ``data: {"error": ...}`` then ``data: [DONE]``);
* on the WebSocket: an error ``res`` frame (``ws_reply``), or a close code carried by the error
  class when it ends the connection (``OpenClawError.ws_close``).

Any other exception is first turned into an ``OpenClawError`` by ``to_error``: the framework's
routing errors by HTTP status, everything else by class; an unexpected one is logged here, once,
and shown as a generic 500.  ``GatewayMiddleware`` applies this to every HTTP request, on the fast
path too; the WebSocket dispatcher to every method call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope, Send

from openclaw.errors import (
    HttpStatusError,
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
    OpenClawError,
)
from openclaw.logs import get_logger

log = get_logger("gateway")

# Where a streaming endpoint puts its ``StreamErrors`` in the ASGI scope, for the middleware.
STREAM_ERRORS = "openclaw.stream_errors"


def sse_json(obj: Any) -> bytes:
    """``obj`` as JSON for an SSE ``data:`` line, with the Unicode line separators escaped.

    U+0085, U+2028 and U+2029 are legal inside an SSE line, but clients that split lines the way
    Python's ``str.splitlines`` does cut an event holding one in two; orjson writes them raw."""
    return sse_safe(orjson.dumps(obj))


def sse_safe(data: bytes) -> bytes:
    """JSON text with U+0085/U+2028/U+2029 as ``\\u`` escapes (they can only be inside strings)."""
    if data.isascii():
        return data  # most events: one pass over the bytes instead of three searches
    if b"\xc2\x85" in data or b"\xe2\x80\xa8" in data or b"\xe2\x80\xa9" in data:
        return (
            data.replace(b"\xc2\x85", b"\\u0085")
            .replace(b"\xe2\x80\xa8", b"\\u2028")
            .replace(b"\xe2\x80\xa9", b"\\u2029")
        )
    return data


class JSONResponse(Response):
    """orjson-encoded JSON: the hot path encodes every response body."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass(frozen=True, slots=True)
class StreamErrors:
    """How one streamed API ends when it fails after its response started."""

    render: Callable[[OpenClawError], bytes]


def _chat_completions_stream_error(err: OpenClawError) -> bytes:
    return b"data: " + sse_json(err.to_dict()) + b"\n\ndata: [DONE]\n\n"


CHAT_COMPLETIONS_STREAM = StreamErrors(_chat_completions_stream_error)


def to_error(exc: BaseException, scope: Scope | None = None) -> OpenClawError:
    """Any exception as a client-safe ``OpenClawError``: routing errors by status, the rest by
    class (unexpected ones logged with their traceback, never shown)."""
    if isinstance(exc, OpenClawError):
        return exc
    if isinstance(exc, HTTPException):
        return _from_status(exc, scope or {})
    log.error("unhandled error", exc_info=exc)
    return InternalError()


def _from_status(exc: HTTPException, scope: Scope) -> OpenClawError:
    path = scope.get("path", "")
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        return NotFoundError(f"Not found: {path}", headers=headers)
    if exc.status_code == 405:
        method = scope.get("method", "")
        return MethodNotAllowedError(f"Method {method} is not allowed on {path}.", headers=headers)
    return HttpStatusError(exc.detail, exc.status_code, headers=headers)


def tools_invoke_body(err: OpenClawError) -> dict[str, Any]:
    """``POST /tools/invoke``'s error shape: ``{ok: false, error: {type, message}}``."""
    body = err.to_dict()["error"]
    return {"ok": False, "error": {"type": body["code"] or body["type"], "message": err.message}}


# The error body of the paths whose API is not OpenAI's (every other path: ``err.to_dict``).
ERROR_BODIES: dict[str, Callable[[OpenClawError], dict[str, Any]]] = {
    "/tools/invoke": tools_invoke_body,
}


async def send_json(err: OpenClawError, send: Send, path: str = "") -> None:
    """``err`` as a whole HTTP response: status, headers and the error body of the API at
    ``path`` (OpenAI's unless ``ERROR_BODIES`` says otherwise)."""
    render = ERROR_BODIES.get(path)
    body = orjson.dumps(render(err) if render is not None else err.to_dict())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in err.headers.items()),
    ]
    await send({"type": "http.response.start", "status": err.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_stream_end(err: OpenClawError, scope: Scope, send: Send) -> None:
    """End a response that has started: the stream's error event (if it declared a format in
    the scope), then the end of the body."""
    errors: StreamErrors | None = scope.get(STREAM_ERRORS)
    body = errors.render(err) if errors is not None else b""
    await send({"type": "http.response.body", "body": body, "more_body": False})


def ws_error(err: OpenClawError) -> dict[str, Any]:
    """The ``error`` object of a WebSocket ``res`` frame."""
    body = err.to_dict()["error"]
    return {"code": body["code"] or body["type"], "type": body["type"], "message": body["message"]}


def ws_reply(frame_id: Any, exc: BaseException) -> dict[str, Any]:
    """The failed ``res`` frame answering request ``frame_id``."""
    return {"type": "res", "id": frame_id, "ok": False, "error": ws_error(to_error(exc))}


async def raise_as_error(request: Request, exc: Exception) -> Response:
    """Starlette's exception hook for its own routing errors: re-raised as ours, so that they
    reach the one renderer (``GatewayMiddleware``) like every other error."""
    raise to_error(exc, request.scope) from exc
