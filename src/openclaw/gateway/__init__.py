"""The gateway: one ASGI app serving HTTP endpoints and the WebSocket on one port."""
