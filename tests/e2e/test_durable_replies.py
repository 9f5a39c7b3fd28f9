"""Durable before answered, as clients see it: when a reply's final bytes arrive, its turn is
already in the transcript; when the turn cannot be stored, the client gets a 503
``store_unavailable`` (JSON before the response starts; an SSE error event and ``[DONE]`` after a
stream started; an error frame on the WebSocket) and nothing of the turn is kept.

Faults are real: the session index held locked by another connection, and a full disk (a file
size limit set on the gateway's own process)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.sync.client import connect

from openclaw.sessions import index as index_module
from tests.e2e.conftest import chat_config, transcripts
from tests.e2e.processes import ENABLED, TOKEN, GatewayProcess
from tests.e2e.rawhttp import Reply, request
from tests.faults import file_size_limit, index_locked
from tests.harness import RunningGateway
from tests.upstream import FakeUpstream


def chat(
    port: int, token: str, text: str, *, user: str | None = "alice", stream: bool = False
) -> Reply:
    body: dict[str, Any] = {"model": "openclaw", "messages": [{"role": "user", "content": text}]}
    if user is not None:
        body["user"] = user
    if stream:
        body["stream"] = True
    return request(
        port,
        "POST",
        "/v1/chat/completions",
        body=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def sse_events(reply: Reply) -> list[Any]:
    lines = [line[6:] for line in reply.body.decode().splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def stored_texts(state_dir: Path) -> list[list[tuple[str, str]]]:
    return [[(r["role"], r["content"]) for r in t] for t in transcripts(state_dir)]


def assert_store_unavailable(reply: Reply) -> None:
    assert reply.status == 503, reply.body
    assert reply.headers["Retry-After"] == "1"
    assert reply.json()["error"] == {
        "message": "The session store is unavailable; try again shortly.",
        "type": "server_error",
        "param": None,
        "code": "store_unavailable",
    }


def assert_stream_failed_after_deltas(reply: Reply) -> None:
    assert reply.status == 200
    events = sse_events(reply)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "store_unavailable"
    assert events[-2]["error"]["type"] == "server_error"
    chunks = events[:-2]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    # The final chunk (finish_reason) is among the bytes that wait for the commit.
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)


def test_the_turn_is_in_the_transcript_when_the_reply_arrives(chat_gateway: RunningGateway) -> None:
    for i in range(6):
        stream = i % 2 == 1
        reply = chat(chat_gateway.port, chat_gateway.token, f"turn {i}", stream=stream)
        assert reply.status == 200
        if stream:
            assert sse_events(reply)[-1] == "[DONE]"
        # Read at once, no waiting: the reply's last bytes left after the commit.
        [records] = stored_texts(chat_gateway.state_dir)
        assert records[-2:] == [("user", f"turn {i}"), ("assistant", f"Echo: turn {i}")]


def test_a_locked_store_fails_the_run_with_503_and_keeps_nothing(
    upstream: FakeUpstream,
    gateway_factory: Callable[..., RunningGateway],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(index_module, "BUSY_TIMEOUT_SECONDS", 0.1)
    gw = gateway_factory(chat_config(upstream))
    assert chat(gw.port, gw.token, "first").status == 200
    with index_locked(gw.state_dir):
        assert_store_unavailable(chat(gw.port, gw.token, "lost plain"))
        assert_stream_failed_after_deltas(chat(gw.port, gw.token, "lost stream", stream=True))
        # A per-request session too.
        assert_store_unavailable(chat(gw.port, gw.token, "lost ephemeral", user=None))
        with connect(gw.ws_url) as ws:
            ws.send(orjson.dumps({"type": "req", "id": "c", "method": "connect",
                                  "params": {"auth": {"token": gw.token}}}).decode())  # fmt: skip
            assert orjson.loads(ws.recv(timeout=10))["ok"] is True
            ws.send(orjson.dumps({"type": "req", "id": "a", "method": "agent",
                                  "params": {"message": "lost ws"}}).decode())  # fmt: skip
            while (frame := orjson.loads(ws.recv(timeout=10)))["type"] != "res":
                pass
        assert frame["ok"] is False
        assert frame["error"]["code"] == "store_unavailable"
    # The store is back: the conversation carries on without the failed turns.
    assert chat(gw.port, gw.token, "second").json()["choices"][0]["message"]["content"] == (
        "Echo: second"
    )
    sent = upstream.model_requests[-1].body["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["first", "second"]
    assert [
        text for records in stored_texts(gw.state_dir) for role, text in records if role == "user"
    ] == ["first", "second"]


def test_a_full_disk_fails_the_run_with_503_and_leaves_no_partial_lines(
    spawn: Callable[..., GatewayProcess], upstream: FakeUpstream
) -> None:
    config = {
        **ENABLED,
        "models": {
            "providers": {
                "up": {"api": "openai-completions", "baseUrl": upstream.base_url,
                       "maxRetries": 0, "models": [{"id": "m"}]}
            }
        },
        "agents": {"defaults": {"model": "up/m"}},
    }  # fmt: skip
    gw = spawn(config)
    state = Path(gw.env["OPENCLAW_STATE_DIR"])
    assert chat(gw.port, TOKEN, "first").status == 200
    [path] = (state / "agents" / "main" / "sessions").glob("*.jsonl")
    before = path.read_bytes()
    wal = (state / "sessions.sqlite-wal").stat().st_size
    # First the transcript cannot grow (a short write, then EFBIG), then only the index cannot
    # (the lines are written, the commit fails): both are undone.
    for limit in (len(before) + 20, wal):
        with file_size_limit(limit, pid=gw.proc.pid):
            assert_store_unavailable(chat(gw.port, TOKEN, "lost plain"))
            assert_stream_failed_after_deltas(chat(gw.port, TOKEN, "lost stream", stream=True))
        assert path.read_bytes() == before
    reply = chat(gw.port, TOKEN, "second")
    assert reply.json()["choices"][0]["message"]["content"] == "Echo: second"
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert [(r["role"], r["content"]) for r in lines] == [
        ("user", "first"),
        ("assistant", "Echo: first"),
        ("user", "second"),
        ("assistant", "Echo: second"),
    ]
    assert gw.stop() == 0
    assert "session store failed" in gw.log
    assert "Traceback" not in gw.log
