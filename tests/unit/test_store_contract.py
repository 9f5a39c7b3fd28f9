"""The session store protocol, run against both stores: the embedded one (SQLite + JSONL) and the
shared one (PostgreSQL, a schema of its own per test).  Whatever a run, a door or a tool can see
of a store must be the same on both; what only one of them has (files, the server) is tested
beside it (test_sessions_store.py, test_store_durability.py, test_postgres_store.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from openclaw.messages import Usage
from openclaw.sessions.base import SessionStore, Turn
from openclaw.sessions.models import TranscriptRecord
from openclaw.sessions.postgres import PostgresSessionStore
from openclaw.sessions.responses import StoredResponse
from openclaw.sessions.store import SqliteSessionStore
from tests.postgres import require_postgres

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(
    kind: str, tmp_path: Path, clock: Clock, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    made: Any
    if kind == "sqlite":
        made = SqliteSessionStore(tmp_path, clock=clock)
    else:
        url = require_postgres()
        schema = request.getfixturevalue("pg_schema")
        made = PostgresSessionStore(url, schema=schema, pool_size=4, clock=clock)
    await made.open()
    try:
        yield made
    finally:
        await made.close()


def rec(role: str, text: str, **kw: Any) -> TranscriptRecord:
    return TranscriptRecord(role=role, content=text, timestamp=T0, **kw)


def turn(key: str, text: str, *, ephemeral: bool = False, agent: str = "main") -> Turn:
    return Turn(
        key=key,
        agent_id=agent,
        ephemeral=ephemeral,
        records=(rec("user", text), rec("assistant", "re " + text, usage=Usage(3, 4))),
        model="p/m",
        usage=Usage(3, 4),
    )


async def texts(store: SessionStore, key: str, limit: int | None = None) -> list[str]:
    entry = await store.get(key)
    assert entry is not None
    return [str(r.content) for r in await store.read_history(entry, max_records=limit)]


async def test_sessions_are_created_found_listed_and_counted(store: Any, clock: Clock) -> None:
    a = await store.get_or_create("agent:main:alpha", "main", ephemeral=False)
    assert (a.key, a.agent_id, a.ephemeral, a.created_at, a.turns) == (
        "agent:main:alpha",
        "main",
        False,
        T0,
        0,
    )
    assert await store.get_or_create("agent:main:alpha", "main", ephemeral=True) == a
    assert await store.get("agent:main:alpha") == a
    assert await store.get("agent:main:nope") is None
    assert await store.get("") is None
    clock.now += 1
    await store.get_or_create("agent:beta:Beta-Two", "beta", ephemeral=False)
    clock.now += 1
    await store.get_or_create("agent:main:req-1", "main", ephemeral=True)
    keys = [e.key for e in await store.list_sessions()]
    assert keys == ["agent:main:req-1", "agent:beta:Beta-Two", "agent:main:alpha"]
    assert [e.key for e in await store.list_sessions(include_ephemeral=False)] == keys[1:]
    assert [e.key for e in await store.list_sessions("main")] == [keys[0], keys[2]]
    assert [e.key for e in await store.list_sessions(limit=1)] == keys[:1]
    assert [e.key for e in await store.list_sessions(search="BETA")] == ["agent:beta:Beta-Two"]
    assert [e.key for e in await store.list_sessions("main", search="beta")] == []
    assert await store.count() == 3
    # ASCII letters match in any case, other letters exactly (on both stores).
    await store.get_or_create("agent:main:Ärger-Notes", "main", ephemeral=False)
    assert [e.key for e in await store.list_sessions(search="Ärger-NOTES")] == [
        "agent:main:Ärger-Notes"
    ]
    assert await store.list_sessions(search="ärger") == []
    with pytest.raises(ValueError):
        await store.get_or_create("agent:beta:x", "main", ephemeral=False)


async def test_turns_are_stored_in_order_with_their_totals(store: Any) -> None:
    for text in ("one", "two", "three"):
        await store.record_turn(turn("agent:main:s", text))
    assert await texts(store, "agent:main:s") == [
        "one",
        "re one",
        "two",
        "re two",
        "three",
        "re three",
    ]
    assert await texts(store, "agent:main:s", 3) == ["re two", "three", "re three"]
    assert await texts(store, "agent:main:s", 0) == []
    entry = await store.get("agent:main:s")
    assert (entry.prompt_tokens, entry.completion_tokens, entry.turns, entry.model) == (
        9,
        12,
        3,
        "p/m",
    )
    records = await store.read_history(entry, max_records=None)
    assert records[1].usage == Usage(3, 4) and records[1].role == "assistant"


async def test_turns_queued_together_keep_their_order(store: Any) -> None:
    """Many turns of one session at once (one group commit or several): all stored, in the
    order they were queued, the tokens of every one counted."""
    done = [store.record_turn(turn("agent:main:busy", f"t{i}")) for i in range(60)]
    done += [store.record_turn(turn(f"agent:main:other{i}", "x")) for i in range(10)]
    await asyncio.gather(*done)
    got = await texts(store, "agent:main:busy")
    assert got == [t for i in range(60) for t in (f"t{i}", f"re t{i}")]
    entry = await store.get("agent:main:busy")
    assert entry.turns == 60 and entry.prompt_tokens == 180
    assert await store.count() == 11


async def test_per_request_sessions(store: Any) -> None:
    await store.record_turn(turn("agent:main:req-a", "q", ephemeral=True))
    entry = await store.get("agent:main:req-a")
    assert entry.ephemeral and entry.turns == 1
    assert await texts(store, "agent:main:req-a") == ["q", "re q"]
    await store.record_turn(turn("agent:main:req-a", "again", ephemeral=True))
    assert await texts(store, "agent:main:req-a") == ["q", "re q", "again", "re again"]


async def test_load_makes_the_session_and_returns_its_tail(store: Any) -> None:
    entry, records = await store.load("agent:main:fresh", "main", max_records=10)
    assert records == [] and not entry.ephemeral
    await store.record_turn(turn("agent:main:fresh", "a"))
    entry, records = await store.load("agent:main:fresh", "main", max_records=1)
    assert [r.content for r in records] == ["re a"]


async def test_append_and_a_session_deleted_meanwhile(store: Any) -> None:
    entry = await store.get_or_create("agent:main:ap", "main", ephemeral=False)
    updated = await store.append(
        entry, [rec("user", "hi"), rec("assistant", "yo")], model="p/x", usage=Usage(1, 2)
    )
    assert (updated.prompt_tokens, updated.completion_tokens, updated.model) == (1, 2, "p/x")
    assert await texts(store, "agent:main:ap") == ["hi", "yo"]
    # Deleted during a run: the append puts it back under the same id.
    assert await store.delete("agent:main:ap")
    revived = await store.append(entry, [rec("user", "back")], model=None, usage=None)
    assert revived.session_id == entry.session_id
    assert await texts(store, "agent:main:ap") == ["back"]
    # Deleted and made anew: the old run's append does not write into the new session.
    assert await store.delete("agent:main:ap")
    new = await store.get_or_create("agent:main:ap", "main", ephemeral=False)
    assert new.session_id != entry.session_id
    await store.append(entry, [rec("user", "stale")], model=None, usage=None)
    assert await texts(store, "agent:main:ap") == []
    with pytest.raises(ValueError):
        await store.append(entry, [], model=None, usage=Usage(-1, 0))


async def test_delete(store: Any) -> None:
    await store.record_turn(turn("agent:main:gone", "secret"))
    entry = await store.get("agent:main:gone")
    assert await store.delete("agent:main:gone")
    assert await store.get("agent:main:gone") is None
    assert await store.read_history(entry, max_records=None) == []
    assert not await store.delete("agent:main:gone")
    assert not await store.delete("")
    await store.record_turn(turn("agent:main:gone", "new"))
    assert await texts(store, "agent:main:gone") == ["new", "re new"]


def response(rid: str, key: str, used_at: float = T0) -> StoredResponse:
    return StoredResponse(rid, "owner", "main", key, "run", used_at, used_at, b"{}", b"[]")


async def test_pruning_per_request_sessions(store: Any, clock: Clock) -> None:
    for i in range(6):
        await store.record_turn(turn(f"agent:main:req-{i}", "q", ephemeral=True))
        clock.now += 10
    await store.record_turn(turn("agent:main:kept", "q"))
    # req-0 is continued by a stored response: not a candidate; req-1 is in use.
    await store.save_response(response("resp_0", "agent:main:req-0"), previous=None)
    removed = await store.prune_ephemeral(
        max_age_seconds=35, max_count=100, in_use={"agent:main:req-1"}
    )
    # Now T0+60: idle longer than 35 s are req-0..req-2; req-0 and req-1 are spared.
    assert removed == 1
    left = {e.key for e in await store.list_sessions()}
    assert left == {"agent:main:req-0", "agent:main:req-1", "agent:main:req-3",
                    "agent:main:req-4", "agent:main:req-5", "agent:main:kept"}  # fmt: skip
    removed = await store.prune_ephemeral(max_age_seconds=1e9, max_count=1, in_use=set())
    assert removed == 3  # the oldest first: req-1, req-3, req-4; req-0 is referenced
    assert {e.key for e in await store.list_sessions()} == {
        "agent:main:req-0",
        "agent:main:req-5",
        "agent:main:kept",
    }
    with pytest.raises(ValueError):
        await store.prune_ephemeral(max_age_seconds=1, max_count=-1, in_use=set())


async def test_stored_responses(store: Any, clock: Clock) -> None:
    await store.record_turn(turn("agent:main:resp-sess", "q", ephemeral=True))
    first = response("resp_1", "agent:main:resp-sess")
    await store.save_response(first, previous=None)
    assert await store.get_response("resp_1") == first
    assert await store.get_response("resp_missing") is None
    second = response("resp_2", "agent:main:resp-sess", used_at=T0 + 100)
    await store.save_response(second, previous="resp_1")
    assert (await store.get_response("resp_1")).used_at == T0 + 100
    # The session stays while a response continues it.
    assert await store.delete_response("resp_1")
    assert await store.get("agent:main:resp-sess") is not None
    assert await store.delete_response("resp_2")
    assert await store.get("agent:main:resp-sess") is None
    assert not await store.delete_response("resp_2")
    # Retention: unused longer than the age goes, with its per-response session.
    await store.record_turn(turn("agent:main:old-sess", "q", ephemeral=True))
    await store.save_response(response("resp_old", "agent:main:old-sess"), previous=None)
    await store.save_response(
        response("resp_new", "agent:main:kept", used_at=T0 + 1000), previous=None
    )
    clock.now = T0 + 1000
    assert await store.prune_responses(max_age_seconds=500) == 1
    assert await store.get_response("resp_old") is None
    assert await store.get("agent:main:old-sess") is None
    assert await store.get_response("resp_new") is not None


async def test_a_closed_store_refuses(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    made: Any
    if kind == "sqlite":
        made = SqliteSessionStore(tmp_path)
    else:
        made = PostgresSessionStore(require_postgres(), schema=request.getfixturevalue("pg_schema"))
    await made.open()
    await made.close()
    with pytest.raises(RuntimeError):
        made.record_turn(turn("agent:main:x", "q"))
    with pytest.raises(RuntimeError):
        await made.get("agent:main:x")


Factory = Callable[[], Any]
