"""Review regressions for the PostgreSQL store and its leases.

Each test states the behaviour the shared store must have (each was a defect found in review).
Every connection a test kills is one it opened itself.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from openclaw.errors import StoreUnavailableError
from openclaw.messages import Usage
from openclaw.sessions.base import Turn
from openclaw.sessions.models import TranscriptRecord
from openclaw.sessions.postgres import PostgresSessionLeases, PostgresSessionStore
from openclaw.sessions.postgres.lease import lock_key
from openclaw.sessions.store import SqliteSessionStore
from tests.postgres import require_postgres, run_sql


class _Proxy:
    """A TCP proxy in front of the test server that can stop forwarding (sockets kept open):
    a frozen server or a network partition, seen from the gateway."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.down_frozen = False  # server -> client
        self.up_frozen = False  # client -> server
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> _Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
        try:
            while data := await r.read(65536):
                while self.up_frozen if up else self.down_frozen:  # noqa: ASYNC110 (a test proxy polling its switch)
                    await asyncio.sleep(0.02)
                w.write(data)
                await w.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(*self._target)
        self._writers += [cw, sw]
        for task in (self._pipe(cr, sw, True), self._pipe(sr, cw, False)):
            t = asyncio.ensure_future(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self.up_frozen = self.down_frozen = False
        for w in self._writers:
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()


@pytest.fixture
def url() -> str:
    return require_postgres()


@pytest.fixture
def schema(url: str) -> AsyncIterator[str]:
    name = f"review_{uuid.uuid4().hex[:12]}"
    yield name  # type: ignore[misc]
    run_sql(url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def proxy(url: str) -> AsyncIterator[_Proxy]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    made = await _Proxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    try:
        yield made
    finally:
        await made.close()


def _via(url: str, proxy: _Proxy) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


async def _other_replica_gets(url: str, schema: str, key: str) -> bool:
    """Whether another replica could take ``key``'s lease now (and gives it back)."""
    conn = await asyncpg.connect(url)
    try:
        lock = lock_key(schema, key)
        taken = await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock)
        if taken:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock)
        return bool(taken)
    finally:
        await conn.close()


async def test_cancelled_acquire_does_not_leave_the_lock_held(
    url: str, schema: str, proxy: _Proxy
) -> None:
    leases = PostgresSessionLeases(_via(url, proxy), schema=schema, max_held=2)
    await leases.start()
    try:
        await leases.acquire("agent:main:warm")  # the shared connection exists
        leases.release("agent:main:warm")
        await asyncio.sleep(0.2)
        proxy.down_frozen = True  # the server grants the lock; the answer is slow to arrive
        task = asyncio.ensure_future(leases.acquire("agent:main:s"))
        await asyncio.sleep(0.5)
        task.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await task
        proxy.down_frozen = False
        leases.release("agent:main:s")  # what the runner would do (a no-op here)
        # The late grant arrives and is given back in the background: soon, whatever the load.
        deadline = time.monotonic() + 30
        while not await _other_replica_gets(url, schema, "agent:main:s"):
            assert time.monotonic() < deadline, "the cancelled acquire left the lock held"
            await asyncio.sleep(0.05)
    finally:
        await leases.aclose()


async def test_a_run_whose_lease_was_lost_cannot_commit_over_another_replica(
    url: str, schema: str
) -> None:
    """The shared lease connection breaks under a run (its lock goes with it) and another
    replica takes the session: the server cannot be stopped from granting it, so order is kept
    at the commit instead. The run that lost its lease is refused (503) once the other's turn
    is in; the transcript holds whole turns, never interleaved ones."""
    a = PostgresSessionLeases(url, schema=schema, max_held=2)
    b = PostgresSessionLeases(url, schema=schema, max_held=2)
    store = PostgresSessionStore(url, schema=schema)
    await store.open()
    await a.start()
    await b.start()
    key = "agent:main:s"
    try:
        await a.acquire(key)  # a run on replica A holds the session ...
        entry_a, _ = await store.load(key, "main", max_records=50)
        pid = a._shared.get_server_pid()  # our own connection, and only that one
        run_sql(url, f"SELECT pg_terminate_backend({int(pid)})")
        await asyncio.wait_for(b.acquire(key), 5)  # ... B gets it once A's lock is gone
        entry_b, _ = await store.load(key, "main", max_records=50)
        await store.record_turn(_turn(key, "from b", entry_b.records))
        with pytest.raises(StoreUnavailableError):
            await store.record_turn(_turn(key, "from a", entry_a.records))
        entry = await store.get(key)
        assert entry is not None
        history = [r.content for r in await store.read_history(entry, max_records=None)]
        assert history == ["from b", "re from b"]
    finally:
        a.release(key)
        b.release(key)
        await a.aclose()
        await b.aclose()
        await store.close()


def _turn(key: str, text: str, fence: int | None) -> Turn:
    records = (
        TranscriptRecord(role="user", content=text, timestamp=1.0),
        TranscriptRecord(role="assistant", content="re " + text, timestamp=2.0),
    )
    return Turn(key, "main", False, records, "p/m", Usage(1, 1), fence=fence)


async def test_lease_on_a_frozen_server_fails_fast(url: str, schema: str, proxy: _Proxy) -> None:
    leases = PostgresSessionLeases(_via(url, proxy), schema=schema, max_held=2, connect_timeout=1)
    await leases.start()
    try:
        await leases.acquire("agent:main:warm")
        leases.release("agent:main:warm")
        await asyncio.sleep(0.2)
        proxy.up_frozen = proxy.down_frozen = True
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(leases.acquire("agent:main:s"), 10)
    finally:
        proxy.up_frozen = proxy.down_frozen = False
        await proxy.close()
        await leases.aclose()


async def test_a_nul_in_an_id_is_not_found_not_unavailable(url: str, schema: str) -> None:
    store = PostgresSessionStore(url, schema=schema, pool_size=2)
    await store.open()
    try:
        assert await store.get_response("resp_\x00") is None
        assert await store.delete_response("resp_\x00") is False
        assert await store.list_sessions(search="a\x00") == []
    finally:
        await store.close()


async def test_append_revival_keeps_the_totals_as_the_embedded_store(url: str, schema: str) -> None:
    async def revive(store: object) -> tuple[object, ...]:
        s = store  # type: ignore[assignment]
        entry = await s.get_or_create("agent:main:ap", "main", ephemeral=False)  # type: ignore[attr-defined]
        first = TranscriptRecord(role="user", content="hi", timestamp=1.0)
        entry = await s.append(entry, [first], model="m", usage=Usage(5, 7))  # type: ignore[attr-defined]
        await s.delete("agent:main:ap")  # type: ignore[attr-defined]
        back = TranscriptRecord(role="user", content="back", timestamp=2.0)
        await s.append(entry, [back], model=None, usage=Usage(1, 1))  # type: ignore[attr-defined]
        got = await s.get("agent:main:ap")  # type: ignore[attr-defined]
        return (
            got.prompt_tokens,
            got.completion_tokens,
            got.turns,
            got.model,
            got.created_at == entry.created_at,
        )

    with tempfile.TemporaryDirectory() as d:
        async with SqliteSessionStore(Path(d)) as embedded:
            expected = await revive(embedded)
    store = PostgresSessionStore(url, schema=schema, pool_size=2)
    await store.open()
    try:
        assert await revive(store) == expected
    finally:
        await store.close()


async def test_close_on_a_frozen_server_is_bounded(url: str, schema: str, proxy: _Proxy) -> None:
    store = PostgresSessionStore(
        _via(url, proxy), schema=schema, pool_size=2, connect_timeout=1, statement_timeout=2
    )
    await store.open()
    await store.get("agent:main:a")
    proxy.up_frozen = proxy.down_frozen = True
    try:
        await asyncio.wait_for(store.close(), 10)  # raises TimeoutError today
    finally:
        proxy.up_frozen = proxy.down_frozen = False
        await proxy.close()


async def test_expired_failures_of_other_addresses_are_dropped(url: str, schema: str) -> None:
    from openclaw.config.schema import RateLimitConfig
    from openclaw.sessions.postgres.auth_failures import PostgresFailures

    store = PostgresSessionStore(url, schema=schema, pool_size=1)
    await store.open()  # the tables
    await store.close()
    failures = PostgresFailures(
        url, schema=schema, cfg=RateLimitConfig(window_ms=100), apply=lambda a, u: None
    )
    await failures.start()
    try:
        await failures.record("198.51.100.1")
        await asyncio.sleep(0.3)  # past the window
        await failures.record("198.51.100.2")
    finally:
        await failures.close()
    conn = await asyncpg.connect(url)
    try:
        left = await conn.fetchval(
            f'SELECT count(*) FROM "{schema}".oc_auth_failures WHERE addr = $1', "198.51.100.1"
        )
    finally:
        await conn.close()
    assert left == 0


async def test_append_never_writes_into_a_session_made_anew_meanwhile(
    url: str, schema: str
) -> None:
    store = PostgresSessionStore(url, schema=schema, pool_size=2)
    await store.open()
    other = await asyncpg.connect(url, server_settings={"search_path": f'"{schema}"'})
    try:
        entry = await store.get_or_create("agent:main:re", "main", ephemeral=False)
        assert await store.delete("agent:main:re")
        tx = other.transaction()
        await tx.start()  # another replica makes the key anew (not committed yet)
        await other.execute(
            "INSERT INTO oc_sessions (key, session_id, agent_id, created_at, updated_at,"
            " ephemeral, turns) VALUES ('agent:main:re', 'new-session', 'main', 1, 1, FALSE, 0)"
        )
        stale = TranscriptRecord(role="user", content="stale", timestamp=1.0)
        task = asyncio.ensure_future(store.append(entry, [stale], model=None, usage=None))
        await asyncio.sleep(0.5)  # its FOR UPDATE found no row; its upsert waits on ours
        await tx.commit()
        await task
        lines = await other.fetch("SELECT line FROM oc_records WHERE session_id = 'new-session'")
        assert lines == []
    finally:
        await other.close()
        await store.close()
