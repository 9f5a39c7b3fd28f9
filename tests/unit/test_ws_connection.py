"""A WebSocket connection's sends: the client being gone is said one way, whatever the server
layer that noticed it."""

from __future__ import annotations

from typing import Any

import pytest

from openclaw.gateway.ws import Connection, WebSocketDisconnected


class FailingSocket:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def send_text(self, data: str) -> None:
        raise self.exc


def connection(exc: BaseException) -> Connection:
    return Connection(FailingSocket(exc), gw=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset"),
        # uvicorn, once it has closed the connection itself after a ping timeout
        RuntimeError("Unexpected ASGI message 'websocket.send', after sending 'websocket.close'."),
    ],
)
async def test_a_send_to_a_gone_client_says_so(exc: BaseException) -> None:
    with pytest.raises(WebSocketDisconnected):
        await connection(exc).event("agent", {"x": 1})


async def test_other_runtime_errors_are_not_taken_for_a_gone_client() -> None:
    bug: Any = RuntimeError("something else")
    with pytest.raises(RuntimeError, match="something else"):
        await connection(bug).send({"type": "event"})
