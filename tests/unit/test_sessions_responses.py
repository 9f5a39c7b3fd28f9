"""Stored Responses API responses in the session store: kept across a reopen, deleted with the
per-response session they alone continued, pruned after their retention (from their last use),
and the sessions they continue spared by the per-request pruning meanwhile; on both stores."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from openclaw.sessions import SqliteSessionStore, TranscriptRecord
from openclaw.sessions.base import Turn
from openclaw.sessions.postgres import PostgresSessionStore
from openclaw.sessions.responses import StoredResponse
from tests.postgres import require_postgres

T0 = 1_700_000_000.0
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


Store = SqliteSessionStore | PostgresSessionStore


@pytest.fixture(params=["sqlite", "postgres"])
def make(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Callable[[], Store]:
    """Opens a store on the same data each time it is called: the state dir, or a schema."""
    if request.param == "sqlite":
        return lambda: SqliteSessionStore(tmp_path, clock=clock)
    url, schema = require_postgres(), request.getfixturevalue("pg_schema")
    return lambda: PostgresSessionStore(url, schema=schema, clock=clock)


@pytest.fixture
async def store(make: Callable[[], Store]) -> AsyncIterator[Store]:
    async with make() as s:
        yield s


def response(rid: str, key: str, at: float) -> StoredResponse:
    body = b'{"id":"%s"}' % rid.encode()
    return StoredResponse(rid, "owner-1", "main", key, "run-" + rid, at, at, body, b"[]")


async def turn(store: Store, key: str, *, ephemeral: bool) -> None:
    record = TranscriptRecord(role="user", content="hi", timestamp=T0)
    await store.record_turn(Turn(key, "main", ephemeral, (record,), None, None))


async def test_a_response_survives_a_reopen(make: Callable[[], Store]) -> None:
    async with make() as store:
        await store.save_response(
            response("resp_1", "agent:main:openresponses:a", T0), previous=None
        )
    async with make() as store:
        got = await store.get_response("resp_1")
        assert got == response("resp_1", "agent:main:openresponses:a", T0)
        assert await store.get_response("resp_2") is None


async def test_delete_takes_the_per_response_session_once_nothing_continues_it(
    store: Store,
) -> None:
    key = "agent:main:openresponses:chain"
    await turn(store, key, ephemeral=True)
    await store.save_response(response("resp_1", key, T0), previous=None)
    await store.save_response(response("resp_2", key, T0 + 1), previous="resp_1")
    assert await store.delete_response("resp_1") is True
    assert await store.get(key) is not None  # resp_2 still continues it
    assert await store.delete_response("resp_2") is True
    assert await store.get(key) is None
    assert await store.delete_response("resp_2") is False


async def test_a_stored_session_outlives_its_responses(store: Store) -> None:
    key = "agent:main:openresponses-user:alice"
    await turn(store, key, ephemeral=False)
    await store.save_response(response("resp_1", key, T0), previous=None)
    assert await store.delete_response("resp_1") is True
    assert await store.get(key) is not None


async def test_retention_counts_from_the_last_use(store: Store, clock: Clock) -> None:
    old, used = "agent:main:openresponses:old", "agent:main:openresponses:used"
    for key in (old, used):
        await turn(store, key, ephemeral=True)
    await store.save_response(response("resp_old", old, T0), previous=None)
    await store.save_response(response("resp_used", used, T0), previous=None)
    # 20 days later resp_used is continued: its 30 days start again.
    clock.now = T0 + 20 * DAY
    await store.save_response(response("resp_next", used, clock.now), previous="resp_used")
    clock.now = T0 + 31 * DAY
    assert await store.prune_responses(max_age_seconds=30 * DAY) == 1
    assert await store.get_response("resp_old") is None
    assert await store.get(old) is None
    assert await store.get_response("resp_used") is not None
    assert await store.get(used) is not None


async def test_per_request_pruning_spares_sessions_a_response_continues(
    store: Store, clock: Clock
) -> None:
    kept, plain = "agent:main:openresponses:kept", "agent:main:openai:plain"
    for key in (kept, plain):
        await turn(store, key, ephemeral=True)
    await store.save_response(response("resp_1", kept, T0), previous=None)
    clock.now = T0 + 2 * DAY
    assert await store.prune_ephemeral(max_age_seconds=DAY, max_count=1000, in_use=()) == 1
    assert await store.get(kept) is not None and await store.get(plain) is None


async def test_sessions_kept_by_responses_do_not_count_against_the_limit(
    store: Store, clock: Clock
) -> None:
    """Regression: kept sessions counted towards ephemeralMaxCount, so once that many
    responses were stored every fresh per-request session was pruned at once."""
    for i in range(3):
        key = f"agent:main:openresponses:kept{i}"
        await turn(store, key, ephemeral=True)
        await store.save_response(response(f"resp_{i}", key, T0), previous=None)
    await turn(store, "agent:main:openai:fresh", ephemeral=True)
    assert await store.prune_ephemeral(max_age_seconds=DAY, max_count=3, in_use=()) == 0
    assert await store.get("agent:main:openai:fresh") is not None
