"""The control page's WebSocket over real sockets: requests as large as the endpoint's limits
allow (found in review)."""

from __future__ import annotations

import base64

import orjson

from tests.e2e.conftest import chat_config
from tests.e2e.test_control_protocol import PNG
from tests.upstream import FakeUpstream


def test_images_within_the_endpoint_limits_do_not_close_the_socket(gateway_factory, ws_to) -> None:
    """Two 7 MB images are within chatCompletions' limits (10 MB each, 20 MB in all); as data:
    URIs in one frame they exceed uvicorn's default WebSocket message size (16 MiB), so the
    gateway raises it to fit: the request is answered, not the socket closed (1009)."""
    with FakeUpstream() as fake:
        gw = gateway_factory(chat_config(fake))
        ws = ws_to(gw)
        blob = PNG + b"\0" * (7_000_000 - len(PNG))
        uri = "data:image/png;base64," + base64.b64encode(blob).decode()
        frame = {
            "type": "req",
            "id": "big",
            "method": "agent",
            "params": {"message": "two pictures", "images": [uri, uri]},
        }
        ws.conn.send(orjson.dumps(frame).decode())
        while True:
            msg = orjson.loads(ws.conn.recv(timeout=30))
            if msg.get("id") == "big":
                break
        assert msg["ok"] is True, msg
        assert "[images: 2]" in msg["payload"]["text"]
