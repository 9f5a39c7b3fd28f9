"""The gateway's WebSocket protocol, on the same port as HTTP.

Frames are JSON text: requests ``{type:"req", id, method, params}``, responses
``{type:"res", id, ok, payload|error}`` and events ``{type:"event", event, payload}``.  The first
frame must be ``connect`` carrying ``{auth: {token|password}}`` (or the upgrade request carries
``Authorization: Bearer``); a bad secret closes the socket with a clear reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.websockets import (
    WebSocket,
    WebSocketDisconnect,
    WebSocketDisconnected,
    WebSocketState,
)

from openclaw import __version__
from openclaw.errors import InvalidRequestError, NotFoundError, OpenClawError
from openclaw.gateway import wire
from openclaw.gateway.state import GatewayState, browser_refusal, client_addr, gateway_of
from openclaw.logs import get_logger

log = get_logger("ws")

PROTOCOL_VERSION = 1
CONNECT_TIMEOUT_SECONDS = 10.0
CLOSE_POLICY = 1008  # policy violation: no connect frame, a cross-origin page
# A send to a client that has gone: nobody is left to answer.
_GONE = (WebSocketDisconnect, WebSocketDisconnected)


# How uvicorn refuses a send on a connection it has closed itself (after a ping timeout).
CLOSED_BY_SERVER = "after sending 'websocket.close'"


class Connection:
    """One authenticated WebSocket client; methods send through it."""

    def __init__(self, ws: WebSocket, gw: GatewayState) -> None:
        self.ws = ws
        self.gw = gw
        # Who authenticated (set by the handshake), and so whose sessions it reaches.
        self.identity = ""
        self._send_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, frame: dict[str, Any]) -> None:
        data = orjson.dumps(frame).decode()
        async with self._send_lock:
            try:
                await self.ws.send_text(data)
            except OSError as exc:
                # The server's transport failing under a send: the client is gone (not an
                # error of the method that was sending).
                raise WebSocketDisconnected("the client has gone") from exc
            except RuntimeError as exc:
                # uvicorn closed the connection itself (the client missed its pings) and says
                # so with a RuntimeError for any later send: the client is gone as well.
                if CLOSED_BY_SERVER not in str(exc):
                    raise
                raise WebSocketDisconnected("the client has gone") from exc

    async def event(self, event: str, payload: Any) -> None:
        await self.send({"type": "event", "event": event, "payload": payload})


Method = Callable[[Connection, dict[str, Any]], Awaitable[Any]]


async def _health(conn: Connection, params: dict[str, Any]) -> Any:
    return {"status": "ok", "version": __version__}


def base_methods() -> dict[str, Method]:
    """Methods every gateway has; the runtime adds its own (agent, sessions.*)."""
    return {"health": _health}


def _frame_id(text: str | None) -> Any:
    """The id of a frame, for replying to one that is otherwise malformed."""
    try:
        frame = orjson.loads(text or "")
    except orjson.JSONDecodeError:
        return None
    return frame.get("id") if isinstance(frame, dict) else None


def _parse(text: str | None) -> dict[str, Any]:
    try:
        frame = orjson.loads(text or "")
    except orjson.JSONDecodeError:
        raise InvalidRequestError("Frame is not valid JSON.") from None
    if (
        not isinstance(frame, dict)
        or frame.get("type") != "req"
        or not isinstance(frame.get("method"), str)
    ):
        raise InvalidRequestError('Expected a frame {"type": "req", "id", "method", "params"}.')
    params = frame.get("params")
    if params is None:
        frame["params"] = {}
    elif not isinstance(params, dict):
        raise InvalidRequestError("`params` must be an object.", param="params")
    return frame


def _presented_secret(ws: WebSocket, params: dict[str, Any]) -> str | None:
    auth = params.get("auth")
    if isinstance(auth, dict):
        for key in ("token", "password"):
            value = auth.get(key)
            if isinstance(value, str):
                return value
    header = ws.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


async def _handshake(ws: WebSocket, gw: GatewayState) -> tuple[str | None, Any]:
    """Wait for ``connect`` and check its secret; returns (the caller's identity, or None when
    refused; the request's id)."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            text = await _receive_text(ws)
    except TimeoutError:
        await ws.close(CLOSE_POLICY, "connect frame not received in time")
        return None, None
    try:
        frame = _parse(text)
        if frame["method"] != "connect":
            raise InvalidRequestError("The first frame must be a `connect` request.")
        auth = gw.auth
        user = ws.headers.get(auth.user_header) if auth.mode == "trusted-proxy" else None
        presented = _presented_secret(ws, frame["params"])
        identity = await auth.check_secret(presented, client_addr(ws), user)
    except OpenClawError as exc:
        await ws.send_text(orjson.dumps(wire.ws_reply(_frame_id(text), exc)).decode())
        await ws.close(*exc.ws_close())
        return None, None
    return identity, frame.get("id")


async def _dispatch(conn: Connection, methods: dict[str, Method], frame: dict[str, Any]) -> None:
    frame_id = frame.get("id")
    try:
        method = methods.get(frame["method"])
        if method is None:
            raise NotFoundError(f"Unknown method `{frame['method']}`.", code="unknown_method")
        payload = await method(conn, frame["params"])
        reply: dict[str, Any] = {"type": "res", "id": frame_id, "ok": True, "payload": payload}
    except _GONE:
        return  # a send failed: the client left mid-request
    except Exception as exc:
        reply = wire.ws_reply(frame_id, exc)
    with contextlib.suppress(*_GONE):
        await conn.send(reply)


async def _receive_text(ws: WebSocket) -> str | None:
    """The next text frame; a binary frame yields None (answered as a malformed frame)."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    return text if isinstance(text, str) else None


def _cross_origin(ws: WebSocket) -> bool:
    """A browser page of another origin (browsers send `Origin`; CLIs and SDKs do not).

    Browsers apply no CORS to WebSockets, so without this any web page could talk to a
    gateway on localhost, and guess a password there without the rate limit (loopback is exempt).
    """
    origin = ws.headers.get("origin")
    if not origin:
        return False
    return urlsplit(origin).netloc.lower() != ws.headers.get("host", "").lower()


async def websocket_endpoint(ws: WebSocket) -> None:
    """Accept, authenticate, then serve requests concurrently until the client leaves."""
    gw = gateway_of(ws)
    methods: dict[str, Method] = ws.app.state.ws_methods
    if _cross_origin(ws) or (gw.auth.mode == "none" and browser_refusal(ws, gw) is not None):
        # Closing before accepting refuses the upgrade with HTTP 403.
        await ws.close(CLOSE_POLICY)
        return
    await ws.accept()
    conn = Connection(ws, gw)
    try:
        identity, connect_id = await _handshake(ws, gw)
        if identity is None:
            return
        conn.identity = identity
        await conn.send(
            {
                "type": "res",
                "id": connect_id,
                "ok": True,
                "payload": {
                    "type": "hello",
                    "protocol": PROTOCOL_VERSION,
                    "server": {"name": "openclaw", "version": __version__},
                    "methods": sorted(methods),
                },
            }
        )
        while True:
            text = await _receive_text(ws)
            try:
                frame = _parse(text)
            except OpenClawError as exc:
                await conn.send(wire.ws_reply(_frame_id(text), exc))
                continue
            task = asyncio.create_task(_dispatch(conn, methods, frame))
            conn.tasks.add(task)
            task.add_done_callback(conn.tasks.discard)
    except WebSocketDisconnect:
        pass
    finally:
        # The client is gone: cancel its runs so upstream calls close at once.
        for task in list(conn.tasks):
            task.cancel()
        if conn.tasks:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        if ws.application_state == WebSocketState.CONNECTED and (
            ws.client_state == WebSocketState.CONNECTED
        ):
            with contextlib.suppress(Exception):
                await ws.close()
