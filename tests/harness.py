"""Starting the real gateway on an ephemeral port, in a thread with its own event loop, so both
sync clients (the official `openai` SDK) and async tests can talk to it over real sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from openclaw.config.loader import validate
from openclaw.config.schema import Config
from openclaw.gateway.app import create_app
from openclaw.gateway.server import uvicorn_config

TOKEN = "test-token-0123456789"


def make_config(data: Mapping[str, Any] | None = None, *, token: str | None = TOKEN) -> Config:
    """A validated config from a dict; port 0 and the test token unless the dict says otherwise."""
    raw: dict[str, Any] = {"gateway": {"port": 0, "auth": {"mode": "token"}}}
    if token is not None:
        raw["gateway"]["auth"]["token"] = token
    _merge(raw, dict(data or {}))
    return validate(raw, env={})


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class RunningGateway:
    """A gateway served by uvicorn in a background thread."""

    def __init__(self, config: Config, state_dir: Path, env: Mapping[str, str] | None = None):
        self.config = config
        self.state_dir = state_dir
        self.app: Starlette = create_app(config, state_dir=state_dir, env=env or {})
        self.server = uvicorn.Server(uvicorn_config(self.app, config))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start()
            self.error = exc

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def start(self) -> RunningGateway:
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"gateway failed to start: {self.error!r}")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)

    @property
    def port(self) -> int:
        sock = self.server.servers[0].sockets[0]
        return int(sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def token(self) -> str:
        return self.app.state.gateway.secret.secret

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def __enter__(self) -> RunningGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def process_group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of group ``pgid`` is left.  Zombies do not count: a
    killed child whose parent is gone waits for PID 1 to reap it, which in a container may be
    never, and ``killpg(pgid, 0)`` still finds it."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
