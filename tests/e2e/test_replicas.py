"""Gateway replicas on one PostgreSQL database (``session.store: "postgres"``): each a process of
its own with its own state dir (as on separate machines), the suite's upstream behind them all.
Turns of one `user` session sent round-robin to three replicas all complete, whole and never
interleaved; a replica SIGKILLed mid-run loses no answered turn and the session goes on through
the others; the failed-auth limit counts across replicas; a stored response made on one
replica is continued on another."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import chat_config
from tests.e2e.processes import TOKEN, GatewayProcess
from tests.postgres import require_postgres
from tests.upstream import FakeUpstream, slow_stream

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


def replica_config(up: FakeUpstream, schema: str, **gateway: Any) -> dict[str, Any]:
    config = chat_config(up)
    config["gateway"]["http"]["endpoints"]["responses"] = {"enabled": True}
    config["gateway"].update(gateway)
    config["session"] = {
        "store": "postgres",
        "postgres": {"url": require_postgres(), "schema": schema},
    }
    return config


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Any]:
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any], n: int) -> list[GatewayProcess]:
        for _ in range(n):
            home = tmp_path / f"replica-{len(started)}"
            home.mkdir()
            started.append(GatewayProcess(home, config))
        return started[-n:]

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
        p.close()


async def _chat(
    http: aiohttp.ClientSession, gw: GatewayProcess, text: str, **body: Any
) -> dict[str, Any]:
    payload = {"model": "openclaw", "messages": [{"role": "user", "content": text}], **body}
    async with http.post(
        f"http://127.0.0.1:{gw.port}/v1/chat/completions", json=payload, headers=AUTH
    ) as reply:
        assert reply.status == 200, await reply.text()
        data: dict[str, Any] = await reply.json()
        return data


async def _history(http: aiohttp.ClientSession, gw: GatewayProcess, user: str) -> list[Any]:
    """The `user` session's transcript, read through a replica's WebSocket."""
    async with http.ws_connect(f"ws://127.0.0.1:{gw.port}/") as ws:
        await ws.send_json({"type": "req", "id": "c", "method": "connect",
                            "params": {"auth": {"token": TOKEN}}})  # fmt: skip
        assert (await ws.receive_json())["ok"] is True
        key = f"agent:main:openai-user:{user}"
        await ws.send_json({"type": "req", "id": "h", "method": "sessions.history",
                            "params": {"sessionKey": key, "limit": 1000}})  # fmt: skip
        reply = await ws.receive_json()
        assert reply["ok"] is True, reply
        messages: list[Any] = reply["payload"]["messages"]
        return messages


def _turns(messages: list[Any]) -> list[tuple[str, str]]:
    """(user text, the reply right after it) for each turn; fails on interleaved turns."""
    out = []
    for i in range(0, len(messages), 2):
        asked, answered = messages[i], messages[i + 1]
        assert asked["role"] == "user" and answered["role"] == "assistant", messages
        out.append((asked["content"], answered["content"]))
    return out


def test_one_session_round_robin_over_three_replicas(
    upstream: FakeUpstream, replicas: Any, pg_schema: str
) -> None:
    gws = replicas(replica_config(upstream, pg_schema), 3)
    # The start-up line names the database (never its credentials) and the schema.
    assert f"store: postgres 127.0.0.1:5432/test schema {pg_schema}" in gws[0].log

    async def scenario() -> list[Any]:
        async with aiohttp.ClientSession() as http:
            # At once: every replica has runs on the session waiting on one another.
            texts = [f"turn {i}" for i in range(12)]
            replies = await asyncio.gather(
                *(_chat(http, gws[i % 3], t, user="shared") for i, t in enumerate(texts))
            )
            for text, reply in zip(texts, replies, strict=True):
                assert reply["choices"][0]["message"]["content"].endswith(text)
            # One after another, round-robin: each sees the turns before it.
            for i in range(3):
                await _chat(http, gws[i], f"then {i}", user="shared")
            return await _history(http, gws[0], "shared")

    messages = asyncio.run(scenario())
    turns = _turns(messages)
    assert len(turns) == 15
    assert sorted(t for t, _ in turns[:12]) == sorted(f"turn {i}" for i in range(12))
    assert [t for t, _ in turns[12:]] == ["then 0", "then 1", "then 2"]
    # Each run saw the whole session before it: its request carried every earlier turn.
    last = upstream.model_requests[-1].body["messages"]
    assert [m["content"] for m in last if m["role"] == "user"] == [t for t, _ in turns]


def test_a_replica_killed_mid_run_loses_no_answered_turn(
    upstream: FakeUpstream, replicas: Any, pg_schema: str
) -> None:
    a, b = replicas(replica_config(upstream, pg_schema), 2)

    async def scenario() -> list[Any]:
        async with aiohttp.ClientSession() as http:
            await _chat(http, a, "answered on a", user="u")
            upstream.script(slow_stream(chunks=400, delay=0.05))
            payload = {"model": "openclaw", "stream": True, "user": "u",
                       "messages": [{"role": "user", "content": "cut off"}]}  # fmt: skip
            async with http.post(
                f"http://127.0.0.1:{a.port}/v1/chat/completions", json=payload, headers=AUTH
            ) as reply:
                await reply.content.readline()  # streaming: the run holds the session
                a.proc.send_signal(signal.SIGKILL)
                a.proc.wait()
            # The session goes on through b at once: the dead replica's lease went with it.
            started = time.monotonic()
            await _chat(http, b, "answered on b", user="u")
            assert time.monotonic() - started < 10
            return await _history(http, b, "u")

    turns = _turns(asyncio.run(scenario()))
    assert [t for t, _ in turns] == ["answered on a", "answered on b"]


def test_the_failed_auth_limit_counts_across_replicas(
    upstream: FakeUpstream, replicas: Any, pg_schema: str
) -> None:
    limit = {"maxAttempts": 3, "windowMs": 60_000, "lockoutMs": 60_000, "exemptLoopback": False}
    gws = replicas(
        replica_config(upstream, pg_schema, auth={"mode": "token", "rateLimit": limit}), 3
    )

    async def status(http: aiohttp.ClientSession, gw: GatewayProcess, token: str) -> int:
        async with http.get(
            f"http://127.0.0.1:{gw.port}/v1/models", headers={"Authorization": f"Bearer {token}"}
        ) as reply:
            return reply.status

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            # One wrong attempt on each replica: three in all, the limit.
            assert [await status(http, gw, "wrong") for gw in gws] == [401, 401, 401]
            # Every replica now refuses this address (a success would have cleared its count:
            # the attacker has no right token, so the polling uses a wrong one).
            deadline = time.monotonic() + 5
            while True:
                codes = [await status(http, gw, "wrong") for gw in gws]
                if codes == [429, 429, 429] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert codes == [429, 429, 429]
            # Locked out: the right token too, on every replica.
            assert [await status(http, gw, TOKEN) for gw in gws] == [429, 429, 429]

    asyncio.run(scenario())


def test_a_stored_response_is_continued_on_another_replica(
    upstream: FakeUpstream, replicas: Any, pg_schema: str
) -> None:
    a, b = replicas(replica_config(upstream, pg_schema), 2)

    async def create(http: aiohttp.ClientSession, gw: GatewayProcess, **body: Any) -> Any:
        async with http.post(
            f"http://127.0.0.1:{gw.port}/v1/responses",
            json={"model": "openclaw", **body},
            headers=AUTH,
        ) as reply:
            assert reply.status == 200, await reply.text()
            return await reply.json()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            first = await create(http, a, input="my name is Ada")
            second = await create(
                http, b, input="what is my name?", previous_response_id=first["id"]
            )
            assert second["previous_response_id"] == first["id"]
            async with http.get(
                f"http://127.0.0.1:{a.port}/v1/responses/{second['id']}", headers=AUTH
            ) as got:
                assert got.status == 200

    asyncio.run(scenario())
    sent = [
        m["content"] for m in upstream.model_requests[-1].body["messages"] if m["role"] != "system"
    ]
    assert sent[0] == "my name is Ada" and sent[-1] == "what is my name?"
