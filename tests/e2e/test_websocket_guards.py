"""The WebSocket door's guards: pages of other origins are refused at the upgrade, and a binary
frame gets an error frame, not a dropped connection."""

from __future__ import annotations

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def test_websocket_refuses_cross_origin_pages(chat_gateway) -> None:
    with (
        pytest.raises(InvalidStatus) as info,
        connect(chat_gateway.ws_url, origin="http://evil.example"),
    ):
        pass
    assert info.value.response.status_code == 403
    same = f"http://127.0.0.1:{chat_gateway.port}"
    with connect(chat_gateway.ws_url, origin=same) as ws:
        ws.send(
            orjson.dumps(
                {
                    "type": "req",
                    "id": 1,
                    "method": "connect",
                    "params": {"auth": {"token": chat_gateway.token}},
                }
            ).decode()
        )
        assert orjson.loads(ws.recv(timeout=10))["ok"] is True


def test_websocket_binary_frame_gets_an_error_frame(chat_gateway) -> None:
    with connect(chat_gateway.ws_url) as ws:
        ws.send(
            orjson.dumps(
                {
                    "type": "req",
                    "id": 1,
                    "method": "connect",
                    "params": {"auth": {"token": chat_gateway.token}},
                }
            ).decode()
        )
        ws.recv(timeout=10)
        ws.send(b"\x00\x01binary")
        reply = orjson.loads(ws.recv(timeout=10))
        assert reply["ok"] is False
        ws.send(orjson.dumps({"type": "req", "id": 2, "method": "health"}).decode())
        assert orjson.loads(ws.recv(timeout=10))["ok"] is True
