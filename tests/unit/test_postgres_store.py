"""What only the PostgreSQL store has: migrations (at start-up, under a lock, refusing a newer
database), the server going away under it (503, then back by itself, nothing half-written),
session leases between replicas, and failed-auth counts shared through the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from openclaw.config.schema import RateLimitConfig
from openclaw.errors import StoreUnavailableError
from openclaw.messages import Usage
from openclaw.sessions.base import Turn
from openclaw.sessions.models import TranscriptRecord
from openclaw.sessions.postgres import PostgresSessionLeases, PostgresSessionStore
from openclaw.sessions.postgres import schema as migrations
from openclaw.sessions.postgres.auth_failures import PostgresFailures
from openclaw.sessions.postgres.lease import lock_key
from tests.postgres import require_postgres


@pytest.fixture
def url() -> str:
    return require_postgres()


@pytest.fixture
async def store(url: str, pg_schema: str) -> AsyncIterator[PostgresSessionStore]:
    made = PostgresSessionStore(url, schema=pg_schema, pool_size=3)
    await made.open()
    try:
        yield made
    finally:
        await made.close()


def turn(key: str, text: str) -> Turn:
    records = (
        TranscriptRecord(role="user", content=text, timestamp=1.0),
        TranscriptRecord(role="assistant", content="re " + text, timestamp=2.0),
    )
    return Turn(key, "main", False, records, "p/m", Usage(1, 1))


async def test_migrations_apply_once_even_from_replicas_starting_together(
    url: str, pg_schema: str
) -> None:
    conns = [await asyncpg.connect(url) for _ in range(4)]
    try:
        before = await migrations.status(conns[0], pg_schema)
        assert (before.current, before.latest) == (0, migrations.LATEST)
        assert [m.version for m in before.pending] == [m.version for m in migrations.MIGRATIONS]
        applied = await asyncio.gather(*(migrations.migrate(c, pg_schema) for c in conns))
        # Exactly one connection applied each migration; the others found it done.
        assert sorted(len(a) for a in applied) == [0, 0, 0, len(migrations.MIGRATIONS)]
        after = await migrations.status(conns[0], pg_schema)
        assert after.current == migrations.LATEST and after.pending == ()
        rows = await conns[0].fetch(f'SELECT version FROM "{pg_schema}".oc_schema_migrations')
        assert sorted(r["version"] for r in rows) == [m.version for m in migrations.MIGRATIONS]
        # A database newer than this gateway knows is refused, not written into.
        await conns[0].execute(
            f'INSERT INTO "{pg_schema}".oc_schema_migrations VALUES ($1, $2, $3)',
            migrations.LATEST + 1,
            "from the future",
            time.time(),
        )
        with pytest.raises(migrations.SchemaTooNewError, match="upgrade the gateway"):
            await migrations.migrate(conns[1], pg_schema)
    finally:
        for conn in conns:
            await conn.close()


async def test_no_server_is_a_clear_503(pg_schema: str) -> None:
    closed = PostgresSessionStore(
        "postgresql://postgres@127.0.0.1:1/test", schema=pg_schema, connect_timeout=2
    )
    with pytest.raises(StoreUnavailableError):
        await closed.open()


async def _kill_connections(url: str, application: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return len(
            await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                application,
            )
        )
    finally:
        await conn.close()


async def test_dropped_connections_fail_fast_then_the_pool_reconnects(
    url: str, store: PostgresSessionStore
) -> None:
    """The server ends every connection of the store (a restart, a failover): the calls that
    were using one fail with 503 (never a hang, never a crash), nothing half-written remains,
    and the next calls work on new connections."""
    await store.record_turn(turn("agent:main:s", "before"))
    assert await _kill_connections(url, f"openclaw-gateway:{store.schema}") >= 1
    outcomes: list[Any] = []
    for i in range(4):
        try:
            await store.record_turn(turn("agent:main:s", f"after {i}"))
            outcomes.append("ok")
        except StoreUnavailableError:
            outcomes.append("503")
    assert outcomes[-1] == "ok" and set(outcomes) <= {"ok", "503"}
    entry = await store.get("agent:main:s")
    assert entry is not None
    history = [r.content for r in await store.read_history(entry, max_records=None)]
    stored = ["before"] + [f"after {i}" for i, o in enumerate(outcomes) if o == "ok"]
    # Whole turns only, in order: a failed write left nothing behind.
    assert history == [t for text in stored for t in (text, "re " + text)]
    assert entry.turns == len(stored)


async def test_a_statement_past_its_timeout_is_a_503(url: str, pg_schema: str) -> None:
    store = PostgresSessionStore(url, schema=pg_schema, statement_timeout=0.2)
    await store.open()
    try:
        locker = await asyncpg.connect(url)
        try:
            await store.get_or_create("agent:main:locked", "main", ephemeral=False)
            async with locker.transaction():
                await locker.execute(
                    f'LOCK TABLE "{pg_schema}".oc_sessions IN ACCESS EXCLUSIVE MODE'
                )
                started = time.monotonic()
                with pytest.raises(StoreUnavailableError):
                    await store.get("agent:main:locked")
                assert time.monotonic() - started < 5
        finally:
            await locker.close()
        assert await store.get("agent:main:locked") is not None
    finally:
        await store.close()


async def test_leases_serialise_one_session_across_replicas(url: str, pg_schema: str) -> None:
    a = PostgresSessionLeases(url, schema=pg_schema, max_held=4)
    b = PostgresSessionLeases(url, schema=pg_schema, max_held=4)
    await a.start()
    await b.start()
    try:
        await a.acquire("agent:main:s")
        waiting = asyncio.create_task(b.acquire("agent:main:s"))
        other = asyncio.create_task(b.acquire("agent:main:other"))
        await asyncio.wait_for(other, 5)  # another session never waits
        done, _ = await asyncio.wait([waiting], timeout=0.3)
        assert not done  # held by a
        a.release("agent:main:s")
        await asyncio.wait_for(waiting, 5)
        b.release("agent:main:s")
        b.release("agent:main:other")
        # A replica that dies loses its leases with its connections.
        await a.acquire("agent:main:s")
        waiting = asyncio.create_task(b.acquire("agent:main:s"))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await a.aclose()  # its connections close: the server drops the lock
        await asyncio.wait_for(waiting, 5)
        b.release("agent:main:s")
        # A wait given up (the client left) leaves nothing held.
        await b.acquire("agent:main:t")
        c = PostgresSessionLeases(url, schema=pg_schema, max_held=2)
        await c.start()
        try:
            gave_up = asyncio.create_task(c.acquire("agent:main:t"))
            await asyncio.sleep(0.1)
            gave_up.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gave_up
            b.release("agent:main:t")
            await asyncio.wait_for(c.acquire("agent:main:t"), 5)
            c.release("agent:main:t")
        finally:
            await c.aclose()
    finally:
        await a.aclose()
        await b.aclose()


async def test_failed_auth_counts_across_replicas(url: str, store: PostgresSessionStore) -> None:
    cfg = RateLimitConfig(max_attempts=3, window_ms=60_000, lockout_ms=60_000)
    locked: dict[str, list[tuple[str, float]]] = {"a": [], "b": []}
    learned = {"a": asyncio.Event(), "b": asyncio.Event()}

    def apply(name: str) -> Any:
        def lock(addr: str, until: float) -> None:
            locked[name].append((addr, until))
            learned[name].set()

        return lock

    replicas = {
        name: PostgresFailures(url, schema=store.schema, cfg=cfg, apply=apply(name))
        for name in ("a", "b")
    }
    for replica in replicas.values():
        await replica.start()
    try:
        # Two failures on one replica and one on the other: three in all, the limit.
        assert await replicas["a"].record("10.0.0.9") is None
        assert await replicas["a"].record("10.0.0.9") is None
        assert locked["a"] == []
        assert await replicas["b"].record("10.0.0.9") is None  # this attempt is answered 401
        assert {addr for addr, _ in locked["b"]} == {"10.0.0.9"}
        # The other replica learns of the lockout by itself...
        await asyncio.wait_for(learned["a"].wait(), 5)
        assert {addr for addr, _ in locked["a"]} == {"10.0.0.9"}
        # ... and an attempt that reaches it first is told, not counted.
        until = locked["b"][0][1]
        assert await replicas["a"].record("10.0.0.9") == until
        # Another address is counted apart; a success forgets its failures everywhere.
        await replicas["a"].record("10.0.0.7")
        await replicas["a"].record("10.0.0.7")
        replicas["b"].forget("10.0.0.7")
        await asyncio.gather(*replicas["b"]._tasks)
        assert await replicas["b"].record("10.0.0.7") is None
        assert "10.0.0.7" not in [addr for addr, _ in locked["b"]]
    finally:
        for replica in replicas.values():
            await replica.close()


async def test_uncontended_leases_share_one_connection_and_survive_its_loss(
    url: str, pg_schema: str
) -> None:
    leases = PostgresSessionLeases(url, schema=pg_schema, max_held=4)
    await leases.start()
    try:
        for i in range(20):
            await leases.acquire(f"agent:main:s{i}")
        keys = [lock_key(pg_schema, f"agent:main:s{i}") & (2**64 - 1) for i in range(20)]
        conn = await asyncpg.connect(url)
        try:
            holders = await conn.fetch(
                "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
                " AND classid::bigint::numeric * 4294967296 + objid::bigint = ANY($1::numeric[])",
                keys,
            )
            assert len(holders) == 1  # twenty leases, one connection
            # That connection breaks under them: the next lease is taken on a new one, and
            # giving back a lost one is harmless.
            await conn.execute("SELECT pg_terminate_backend($1)", holders[0]["pid"])
        finally:
            await conn.close()
        # The one lease taken on the broken connection may fail (503); the next is on a new one.
        try:
            await leases.acquire("agent:main:next")
        except StoreUnavailableError:
            await leases.acquire("agent:main:next")
        for i in range(20):
            leases.release(f"agent:main:s{i}")
        leases.release("agent:main:next")
        await leases.acquire("agent:main:s0")  # free again
        leases.release("agent:main:s0")
    finally:
        await leases.aclose()
