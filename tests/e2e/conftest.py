from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import OpenAI
from websockets.sync.client import ClientConnection, connect

from tests.e2e.processes import GatewayProcess
from tests.harness import RunningGateway
from tests.upstream import FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


def chat_config(up: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    """Chat completions on, one OpenAI-compatible provider (the fake), agents main and beta."""
    provider = {
        "api": "openai-completions",
        "baseUrl": up.base_url,
        "apiKey": "upstream-key",
        "maxRetries": 0,
        "models": [{"id": "fake-model", "input": ["text", "image"]}, {"id": "text-only"}],
    }
    provider.update(overrides.pop("provider", {}))
    config: dict[str, Any] = {
        "gateway": {"http": {"endpoints": {"chatCompletions": {"enabled": True}}}},
        "models": {"providers": {"fake": provider}},
        "agents": {
            "defaults": {"model": "fake/fake-model"},
            "list": [{"id": "main", "default": True}, {"id": "beta"}],
        },
        # The endpoint's own behaviour, without server tools in every request (their tests turn
        # them on).
        "tools": {"profile": "minimal"},
    }
    for key, value in overrides.items():
        config[key] = value
    return config


# --- agents with tools ---------------------------------------------------------------------

CODING_TOOLS = {
    "read",
    "write",
    "edit",
    "ls",
    "exec",
    "web_fetch",
    "memory_search",
    "memory_get",
    "sessions_list",
    "sessions_history",
}


def tools_config(up: FakeUpstream, **tools: Any) -> dict[str, Any]:
    cfg = chat_config(up)
    cfg["tools"] = {"profile": "coding", **tools}
    return cfg


def call(name: str, **args: Any) -> tuple[str, str]:
    return (name, json.dumps(args))


def client(gw: RunningGateway) -> OpenAI:
    return OpenAI(base_url=gw.url + "/v1", api_key=gw.token, max_retries=0)


def ask(
    gw: RunningGateway, content: str, *, stream: bool = False, model: str = "openclaw", **kw: Any
) -> str:
    """The reply's text (a stream's deltas joined)."""
    with client(gw) as c:
        messages = [{"role": "user", "content": content}]
        if not stream:
            reply = c.chat.completions.create(model=model, messages=messages, **kw)
            assert reply.choices[0].finish_reason == "stop"
            return reply.choices[0].message.content or ""
        chunks = list(c.chat.completions.create(model=model, messages=messages, stream=True, **kw))
    assert chunks[-1].choices[0].finish_reason == "stop"
    return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "tool"]


@pytest.fixture
def chat_gateway(
    upstream: FakeUpstream, gateway_factory: Callable[..., RunningGateway]
) -> RunningGateway:
    return gateway_factory(chat_config(upstream))


def transcripts(state_dir: Path, agent: str = "main") -> list[list[dict[str, Any]]]:
    out = []
    for path in sorted((state_dir / "agents" / agent / "sessions").glob("*.jsonl")):
        out.append([orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()])
    return out


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start `openclaw gateway run` processes (state under ``tmp_path``); killed at the end."""
    procs: list[GatewayProcess] = []

    def start(config: dict[str, Any], **kw: Any) -> GatewayProcess:
        p = GatewayProcess(tmp_path, config, **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
        p.close()


# --- a small sync WebSocket client --------------------------------------------------------------


class Ws:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self._ids = iter(range(1, 1_000_000))

    def call(self, method: str, params: dict[str, Any] | None = None) -> tuple[list[dict], dict]:
        """Send one request; (the events that arrived before its response, the response)."""
        frame_id = f"r{next(self._ids)}"
        frame = {"type": "req", "id": frame_id, "method": method, "params": params or {}}
        self.conn.send(orjson.dumps(frame).decode())
        events = []
        while True:
            msg = orjson.loads(self.conn.recv(timeout=10))
            if msg["type"] == "event":
                events.append(msg)
            elif msg.get("id") == frame_id:
                return events, msg


@pytest.fixture
def ws_to() -> Iterator[Callable[[RunningGateway], Ws]]:
    opened = contextlib.ExitStack()

    def open_ws(gw: RunningGateway) -> Ws:
        ws = Ws(opened.enter_context(connect(gw.ws_url)))
        _, hello = ws.call("connect", {"auth": {"token": gw.token}})
        assert hello["ok"] is True
        assert {"agent", "sessions.list", "sessions.history"} <= set(hello["payload"]["methods"])
        return ws

    with opened:
        yield open_ws
