"""SqliteSessionStore and the transcript files: behaviour, crash tolerance, concurrency, threading."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openclaw.messages import Usage
from openclaw.sessions import transcript
from openclaw.sessions.bulk import import_entries
from openclaw.sessions.keys import build_key, ephemeral_key
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.sessions.postgres import PostgresSessionStore
from openclaw.sessions.store import SessionStore, SqliteSessionStore
from tests.postgres import require_postgres

T0 = 1_700_000_000.0


class FakeClock:
    """A settable clock, so ages and orderings do not depend on real time passing."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(
    tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Any]:
    """The embedded store; the shared one too for the tests marked ``both_stores``."""
    if getattr(request, "param", "sqlite") == "sqlite":
        async with SqliteSessionStore(tmp_path, clock=clock) as s:
            yield s
        return
    schema = request.getfixturevalue("pg_schema")
    async with PostgresSessionStore(require_postgres(), schema=schema, clock=clock) as s:
        yield s


# Behaviour every store has (the rest of this file is about the embedded store's files).
both_stores = pytest.mark.parametrize("store", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def transcript_warnings() -> Iterator[ListHandler]:
    # A handler on the logger itself: the "openclaw" logger may not propagate to caplog's root.
    handler = ListHandler()
    logger = logging.getLogger("openclaw.sessions.transcript")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def rec(i: int, *, role: str = "user", size: int = 0) -> TranscriptRecord:
    return TranscriptRecord(role=role, content=f"m{i}" + "x" * size, timestamp=T0 + i)


def contents(records: list[TranscriptRecord]) -> list[str]:
    return [r.content if isinstance(r.content, str) else "<parts>" for r in records]


KEY = build_key("main", "main")


# --- lifecycle ----------------------------------------------------------------------------------


async def test_open_creates_index_in_wal_mode(tmp_path: Path) -> None:
    store: SessionStore = SqliteSessionStore(tmp_path)
    await store.open()
    await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.sqlite")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {
        "session_index",
        "session_index_agent_updated",
        "session_index_ephemeral_updated",
        "ephemeral_turns",
    } <= names


async def test_closed_store_refuses_calls_and_close_is_idempotent(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path)
    with pytest.raises(RuntimeError):
        await store.get(KEY)
    await store.open()
    with pytest.raises(RuntimeError):
        await store.open()
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError):
        await store.count()


async def test_data_survives_reopen(tmp_path: Path) -> None:
    async with SqliteSessionStore(tmp_path) as store:
        entry = await store.get_or_create(KEY, "main", ephemeral=False)
        await store.append(entry, [rec(1)], model="m", usage=Usage(2, 3))
    async with SqliteSessionStore(tmp_path) as store:
        again = await store.get(KEY)
        assert again is not None
        assert (again.session_id, again.prompt_tokens, again.completion_tokens) == (
            entry.session_id,
            2,
            3,
        )
        assert contents(await store.read_history(again, max_records=None)) == ["m1"]


# --- get_or_create ------------------------------------------------------------------------------


@both_stores
async def test_get_or_create_is_idempotent(store: SqliteSessionStore, clock: FakeClock) -> None:
    assert await store.get(KEY) is None
    first = await store.get_or_create(KEY, "main", ephemeral=False)
    clock.advance(10)
    second = await store.get_or_create(KEY, "main", ephemeral=True)
    assert second == first
    assert await store.get(KEY) == first
    assert first.created_at == first.updated_at == T0
    assert not first.ephemeral
    assert await store.count() == 1
    other = await store.get_or_create(build_key("main", "other"), "main", ephemeral=True)
    assert other.session_id != first.session_id
    assert other.ephemeral
    assert await store.count() == 2


@pytest.mark.parametrize(
    ("key", "agent_id"),
    [
        ("main", "main"),  # not agent-scoped
        ("agent:ops:main", "main"),  # agent mismatch
        ("agent:main:a\nb", "main"),  # control char
        ("agent:main:" + "x" * 600, "main"),  # too long
        ("agent:../x:main", "../x"),  # would escape the state dir
    ],
)
@both_stores
async def test_get_or_create_rejects_bad_keys(
    store: SqliteSessionStore, key: str, agent_id: str
) -> None:
    with pytest.raises(ValueError):
        await store.get_or_create(key, agent_id, ephemeral=False)
    assert await store.count() == 0


@both_stores
async def test_get_and_delete_of_an_invalid_key_find_nothing(store: SqliteSessionStore) -> None:
    assert await store.get("agent:main:\ud800") is None
    assert await store.delete("agent:main:\ud800") is False


# --- append / read_history ----------------------------------------------------------------------


@both_stores
async def test_append_and_read_history_order_and_tail(store: SqliteSessionStore) -> None:
    entry = await store.get_or_create(KEY, "main", ephemeral=False)
    assert await store.read_history(entry, max_records=None) == []
    await store.append(entry, [rec(1), rec(2, role="assistant")], model=None, usage=None)
    await store.append(entry, [rec(3)], model=None, usage=None)
    await store.append(entry, [], model=None, usage=None)
    await store.append(entry, [rec(4), rec(5)], model=None, usage=None)

    assert contents(await store.read_history(entry, max_records=None)) == [
        "m1",
        "m2",
        "m3",
        "m4",
        "m5",
    ]
    assert contents(await store.read_history(entry, max_records=2)) == ["m4", "m5"]
    assert contents(await store.read_history(entry, max_records=3)) == ["m3", "m4", "m5"]
    assert len(await store.read_history(entry, max_records=99)) == 5
    assert await store.read_history(entry, max_records=0) == []
    with pytest.raises(ValueError):
        await store.read_history(entry, max_records=-1)


async def test_transcript_file_layout_and_format(store: SqliteSessionStore) -> None:
    entry = await store.get_or_create(build_key("ops", "main"), "ops", ephemeral=False)
    full = TranscriptRecord(
        role="assistant",
        content=[{"type": "text", "text": "hi\nthere"}],
        timestamp=T0,
        run_id="run-1",
        usage=Usage(3, 4),
        stop_reason="stop",
        model="p/m",
        meta={"k": [1, 2]},
    )
    bare = TranscriptRecord(role="user", content="hello", timestamp=T0 + 1)
    await store.append(entry, [full, bare], model=None, usage=None)

    path = store.state_dir / "agents" / "ops" / "sessions" / f"{entry.session_id}.jsonl"
    assert store.transcript_path(entry) == path
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    first, second = (orjson.loads(line) for line in lines[:-1])
    assert first == {
        "role": "assistant",
        "content": [{"type": "text", "text": "hi\nthere"}],
        "timestamp": T0,
        "runId": "run-1",
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        "stopReason": "stop",
        "model": "p/m",
        "meta": {"k": [1, 2]},
    }
    assert second == {"role": "user", "content": "hello", "timestamp": T0 + 1}
    assert await store.read_history(entry, max_records=None) == [full, bare]


async def test_tail_of_a_file_bigger_than_the_block_size(store: SqliteSessionStore) -> None:
    entry = await store.get_or_create(KEY, "main", ephemeral=False)
    for batch in range(30):
        records = [rec(batch * 100 + i, size=150) for i in range(100)]
        await store.append(entry, records, model=None, usage=None)
    # One line several blocks long right at the end.
    huge = rec(9999, size=3 * transcript.DEFAULT_BLOCK_SIZE)
    await store.append(entry, [huge], model=None, usage=None)

    assert store.transcript_path(entry).stat().st_size > 10 * transcript.DEFAULT_BLOCK_SIZE
    tail = await store.read_history(entry, max_records=50)
    assert [r.timestamp for r in tail] == [T0 + i for i in range(2951, 3000)] + [T0 + 9999]
    assert tail[-1] == huge
    everything = await store.read_history(entry, max_records=None)
    assert len(everything) == 3001


def test_read_tail_reads_only_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.jsonl"
    data = b"".join(rec(i, size=500).to_json_bytes() for i in range(10_000))
    transcript.append_lines(path, data, fsync=False)
    read: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        chunk: bytes = real_pread(fd, n, offset)
        read.append(len(chunk))
        return chunk

    monkeypatch.setattr(os, "pread", counting_pread)
    tail = transcript.read_tail(path, 10, block_size=4096)
    assert [r.timestamp for r in tail] == [T0 + i for i in range(9990, 10_000)]
    assert len(data) > 5_000_000
    assert sum(read) <= 3 * 4096


async def test_an_uncommitted_tail_is_invisible_and_cut_off_by_the_next_write(
    store: SqliteSessionStore, transcript_warnings: ListHandler
) -> None:
    entry = await store.get_or_create(KEY, "main", ephemeral=False)
    await store.append(entry, [rec(1), rec(2), rec(3)], model=None, usage=None)
    path = store.transcript_path(entry)
    committed = path.read_bytes()
    with path.open("ab") as f:  # a crash between writing lines and committing them
        f.write(rec(99).to_json_bytes() + b'{"role": "assistant", "content": "half a li')

    assert contents(await store.read_history(entry, max_records=None)) == ["m1", "m2", "m3"]
    assert contents(await store.read_history(entry, max_records=2)) == ["m2", "m3"]
    assert not transcript_warnings.records  # never even read

    await store.append(entry, [rec(4), rec(5)], model=None, usage=None)
    assert path.read_bytes() == committed + rec(4).to_json_bytes() + rec(5).to_json_bytes()
    assert [r.getMessage() for r in transcript_warnings.records] == [
        "cutting off an uncommitted transcript write"
    ]
    assert contents(await store.read_history(entry, max_records=None)) == [
        "m1",
        "m2",
        "m3",
        "m4",
        "m5",
    ]


def _damaged(store: SqliteSessionStore, session_id: str, data: bytes) -> Path:
    """A transcript whose committed part is damaged (as one imported or upgraded would be)."""
    path = transcript.transcript_path(store.state_dir, "main", session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def test_a_committed_transcript_ending_in_a_torn_line_keeps_it_apart(
    store: SqliteSessionStore, transcript_warnings: ListHandler
) -> None:
    path = _damaged(
        store,
        "torn",
        b"".join(rec(i).to_json_bytes() for i in (1, 2, 3))
        + b'{"role": "assistant", "content": "half a li',
    )
    await asyncio.to_thread(
        import_entries,
        store.state_dir,
        [SessionEntry(KEY, "torn", "main", T0, T0, None, 0, 0, False)],
    )
    entry = await store.get(KEY)
    assert entry is not None and entry.transcript_bytes == path.stat().st_size
    assert contents(await store.read_history(entry, max_records=None)) == ["m1", "m2", "m3"]
    assert contents(await store.read_history(entry, max_records=2)) == ["m2", "m3"]
    assert transcript_warnings.records

    await store.append(entry, [rec(4), rec(5)], model=None, usage=None)
    raw_lines = path.read_bytes().split(b"\n")
    assert raw_lines[3] == b'{"role": "assistant", "content": "half a li'
    assert orjson.loads(raw_lines[4])["content"] == "m4"
    updated = await store.get(KEY)
    assert updated is not None and updated.transcript_bytes == path.stat().st_size
    assert contents(await store.read_history(entry, max_records=None)) == [
        "m1",
        "m2",
        "m3",
        "m4",
        "m5",
    ]
    # The torn line now sits in the middle; a tail spanning it skips it and still counts records.
    assert contents(await store.read_history(entry, max_records=3)) == ["m3", "m4", "m5"]


async def test_a_transcript_shorter_than_its_committed_length_reads_what_is_there(
    store: SqliteSessionStore, transcript_warnings: ListHandler
) -> None:
    """A power cut without fsync can lose the end of a file the index counted."""
    entry = await store.get_or_create(KEY, "main", ephemeral=False)
    await store.append(entry, [rec(i) for i in range(1, 6)], model=None, usage=None)
    path = store.transcript_path(entry)
    whole = path.read_bytes()
    with path.open("r+b") as f:
        f.truncate(len(whole) - 10)  # the last record, torn
    for limit in (2, None, 2):  # nothing short is remembered by the cache
        assert contents(await store.read_history(entry, max_records=limit))[-2:] == ["m3", "m4"]
    assert any("shorter" in r.getMessage() for r in transcript_warnings.records)
    await store.append(entry, [rec(6)], model=None, usage=None)
    assert contents(await store.read_history(entry, max_records=3)) == ["m3", "m4", "m6"]


async def test_unparseable_lines_of_every_kind_are_skipped(
    store: SqliteSessionStore, transcript_warnings: ListHandler
) -> None:
    junk = b"[1, 2]\n\xff\xfe\n{}\n" + b'{"role": "user", "content": 5, "timestamp": 1}\n\n'
    _damaged(store, "damaged", rec(1).to_json_bytes() + junk)
    await asyncio.to_thread(
        import_entries,
        store.state_dir,
        [SessionEntry(KEY, "damaged", "main", T0, T0, None, 0, 0, False)],
    )
    entry = await store.get(KEY)
    assert entry is not None
    await store.append(entry, [rec(2)], model=None, usage=None)
    assert contents(await store.read_history(entry, max_records=None)) == ["m1", "m2"]
    assert len(transcript_warnings.records) == 4


@both_stores
async def test_usage_totals_and_model(store: SqliteSessionStore, clock: FakeClock) -> None:
    entry = await store.get_or_create(KEY, "main", ephemeral=False)
    clock.advance(5)
    e1 = await store.append(entry, [rec(1)], model="a/one", usage=Usage(10, 5))
    clock.advance(5)
    e2 = await store.append(e1, [rec(2)], model=None, usage=Usage(3, 2))
    clock.advance(5)
    # A stale entry is fine: totals are added in SQL, not computed from the caller's copy.
    e3 = await store.append(entry, [rec(3)], model="b/two", usage=None)
    assert (e1.prompt_tokens, e1.completion_tokens, e1.model, e1.updated_at) == (
        10,
        5,
        "a/one",
        T0 + 5,
    )
    assert (e2.prompt_tokens, e2.completion_tokens, e2.model) == (13, 7, "a/one")
    assert (e3.prompt_tokens, e3.completion_tokens, e3.model, e3.updated_at) == (
        13,
        7,
        "b/two",
        T0 + 15,
    )
    assert e3.created_at == T0
    assert await store.get(KEY) == e3
    with pytest.raises(ValueError):
        await store.append(e3, [], model=None, usage=Usage(-1, 0))


@both_stores
async def test_append_revives_a_row_deleted_mid_run(store: SqliteSessionStore) -> None:
    entry = await store.get_or_create(KEY, "main", ephemeral=True)
    assert await store.delete(KEY)
    updated = await store.append(entry, [rec(1)], model="m", usage=Usage(1, 1))
    assert await store.get(KEY) == updated
    assert updated.session_id == entry.session_id
    assert contents(await store.read_history(updated, max_records=None)) == ["m1"]


# --- list / delete / prune ----------------------------------------------------------------------


@both_stores
async def test_list_sessions_order_and_filters(store: SqliteSessionStore, clock: FakeClock) -> None:
    specs = [
        ("main", "a", False),
        ("ops", "b", False),
        ("main", "c", True),
        ("ops", "d", True),
        ("main", "e", False),
    ]
    entries = {}
    for agent, name, ephemeral in specs:
        clock.advance(1)
        entries[name] = await store.get_or_create(
            build_key(agent, name), agent, ephemeral=ephemeral
        )
    clock.advance(1)
    await store.append(entries["a"], [rec(1)], model=None, usage=None)  # "a" becomes newest

    def names(items: list[SessionEntry]) -> list[str]:
        return [e.key.rsplit(":", 1)[1] for e in items]

    assert names(await store.list_sessions()) == ["a", "e", "d", "c", "b"]
    assert names(await store.list_sessions(limit=2)) == ["a", "e"]
    assert names(await store.list_sessions("main")) == ["a", "e", "c"]
    assert names(await store.list_sessions("main", include_ephemeral=False)) == ["a", "e"]
    assert names(await store.list_sessions(include_ephemeral=False)) == ["a", "e", "b"]
    assert names(await store.list_sessions("nobody")) == []
    assert await store.list_sessions(limit=0) == []


async def test_delete_removes_row_and_transcript(store: SqliteSessionStore) -> None:
    entry = await store.get_or_create(KEY, "main", ephemeral=False)
    await store.append(entry, [rec(1)], model=None, usage=None)
    path = store.transcript_path(entry)
    assert path.exists()
    assert await store.delete(KEY) is True
    assert not path.exists()
    assert await store.get(KEY) is None
    assert await store.delete(KEY) is False


async def _ephemeral(store: SqliteSessionStore, clock: FakeClock, n: int) -> list[SessionEntry]:
    out = []
    for i in range(n):
        clock.advance(1)
        entry = await store.get_or_create(ephemeral_key("main"), "main", ephemeral=True)
        out.append(await store.append(entry, [rec(i)], model=None, usage=None))
    return out


@both_stores
async def test_prune_ephemeral_by_age(store: SqliteSessionStore, clock: FakeClock) -> None:
    persistent = await store.get_or_create(KEY, "main", ephemeral=False)
    await store.append(persistent, [rec(0)], model=None, usage=None)
    old = await _ephemeral(store, clock, 4)  # updated at T0+1 .. T0+4
    clock.advance(100)
    young = await _ephemeral(store, clock, 2)
    clock.advance(50)

    pruned = await store.prune_ephemeral(
        max_age_seconds=100, max_count=1000, in_use={old[1].key, "agent:main:unrelated"}
    )

    assert pruned == 3
    survivors = {e.key for e in await store.list_sessions()}
    assert survivors == {persistent.key, old[1].key, young[0].key, young[1].key}
    for e in old:
        assert bool(await store.read_history(e, max_records=1)) == (e.key == old[1].key)
    assert contents(await store.read_history(persistent, max_records=None)) == ["m0"]
    assert await store.prune_ephemeral(max_age_seconds=100, max_count=1000, in_use=()) == 1


@both_stores
async def test_prune_ephemeral_by_count(store: SqliteSessionStore, clock: FakeClock) -> None:
    persistent = await store.get_or_create(KEY, "main", ephemeral=False)
    eph = await _ephemeral(store, clock, 10)

    pruned = await store.prune_ephemeral(max_age_seconds=1e9, max_count=4, in_use=[eph[0].key])

    # The in-use oldest one stays and counts towards the 4, so only the 3 newest others remain.
    assert pruned == 6
    remaining = await store.list_sessions(include_ephemeral=True)
    assert {e.key for e in remaining} == {persistent.key} | {e.key for e in (eph[0], *eph[7:])}
    assert [bool(await store.read_history(e, max_records=1)) for e in eph] == (
        [True] + [False] * 6 + [True] * 3
    )
    assert await store.count() == 5
    assert await store.prune_ephemeral(max_age_seconds=1e9, max_count=4, in_use=()) == 0


# --- concurrency and threading ------------------------------------------------------------------


async def test_two_stores_appending_concurrently_write_whole_lines(tmp_path: Path) -> None:
    async with SqliteSessionStore(tmp_path) as a, SqliteSessionStore(tmp_path) as b:
        entry_a = await a.get_or_create(KEY, "main", ephemeral=False)
        entry_b = await b.get_or_create(KEY, "main", ephemeral=False)
        assert entry_a.session_id == entry_b.session_id

        def batch(writer: str, n: int) -> list[TranscriptRecord]:
            # Big, varied sizes: a non-atomic writer would interleave inside these lines.
            size = 1000 + (n * 7919) % 150_000
            return [
                TranscriptRecord(
                    role="user",
                    content=writer * size,
                    timestamp=T0,
                    meta={"writer": writer, "batch": n, "seq": s},
                )
                for s in range(3)
            ]

        async def writer(store: SqliteSessionStore, entry: SessionEntry, name: str) -> None:
            for n in range(40):
                await store.append(entry, batch(name, n), model=None, usage=Usage(1, 2))

        await asyncio.gather(writer(a, entry_a, "a"), writer(b, entry_b, "b"))

        lines = a.transcript_path(entry_a).read_bytes().split(b"\n")
        assert lines[-1] == b""
        parsed = [orjson.loads(line) for line in lines[:-1]]  # raises on any torn line
        assert len(parsed) == 240
        for i in range(0, 240, 3):  # each batch is contiguous and in order
            metas = [p["meta"] for p in parsed[i : i + 3]]
            assert [m["seq"] for m in metas] == [0, 1, 2]
            assert len({(m["writer"], m["batch"]) for m in metas}) == 1
        final = await b.get(KEY)
        assert final is not None
        assert (final.prompt_tokens, final.completion_tokens) == (80, 160)


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from openclaw.messages import Usage
    from openclaw.sessions.models import TranscriptRecord
    from openclaw.sessions.store import SqliteSessionStore

    async def main(state_dir: str, name: str) -> None:
        async with SqliteSessionStore(Path(state_dir)) as store:
            entry = await store.get_or_create("agent:main:main", "main", ephemeral=False)
            for n in range(60):
                records = [
                    TranscriptRecord(role="user", content=name * (500 + n * 997 % 70_000),
                                     timestamp=0.0, meta={"w": name, "n": n, "s": s})
                    for s in range(2)
                ]
                await store.append(entry, records, model=None, usage=Usage(1, 0))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_two_processes_appending_to_one_session(tmp_path: Path) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            str(tmp_path),
            name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in ("p", "q")
    ]
    results = await asyncio.gather(*(p.communicate() for p in procs))
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()

    async with SqliteSessionStore(tmp_path) as store:
        entry = await store.get(KEY)
        assert entry is not None
        assert entry.prompt_tokens == 120
        raw = store.transcript_path(entry).read_bytes()
        history = await store.read_history(entry, max_records=None)
    assert raw.count(b"\n") == 240
    assert len(history) == 240
    seen = {(r.meta or {}).get("w") for r in history}
    assert seen == {"p", "q"}


_OPENER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from openclaw.messages import Usage
    from openclaw.sessions.models import TranscriptRecord
    from openclaw.sessions.store import SqliteSessionStore

    async def main(state_dir: str, name: str) -> None:
        print("ready", flush=True)
        start = float(sys.stdin.readline())
        while time.time() < start:  # all children open the new index at the same moment
            pass
        async with SqliteSessionStore(Path(state_dir)) as store:
            entry = await store.get_or_create("agent:main:main", "main", ephemeral=False)
            record = TranscriptRecord(role="user", content=name, timestamp=0.0)
            await store.append(entry, [record], model=None, usage=Usage(1, 0))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_processes_creating_one_index_at_the_same_moment(tmp_path: Path) -> None:
    # Switching a new file to WAL upgrades a read lock to a write lock, for which SQLite never
    # waits (busy timeout or not): without a retry, one of two simultaneous openers failed at once.
    for attempt in range(3):
        state_dir = tmp_path / str(attempt)
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _OPENER,
                str(state_dir),
                str(i),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for i in range(3)
        ]
        for proc in procs:
            assert proc.stdout is not None
            await proc.stdout.readline()
        start = f"{time.time() + 0.1}\n".encode()
        results = await asyncio.gather(*(p.communicate(start) for p in procs))
        for proc, (_, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, err.decode()
        with contextlib.closing(sqlite3.connect(state_dir / "sessions.sqlite")) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert db.execute("SELECT prompt_tokens FROM session_index").fetchall() == [(3,)]


async def test_io_runs_on_a_worker_thread(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    threads: set[int] = set()

    def on_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            threads.add(threading.get_ident())
            return fn(*args, **kwargs)

        return wrapper

    real_connect = sqlite3.connect

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db: sqlite3.Connection = real_connect(*args, **kwargs)
        db.set_trace_callback(lambda _sql: threads.add(threading.get_ident()))
        return db

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    monkeypatch.setattr(transcript.AppendBatch, "append", on_thread(transcript.AppendBatch.append))
    monkeypatch.setattr(transcript, "read_tail", on_thread(transcript.read_tail))

    async with SqliteSessionStore(tmp_path / "traced") as traced:
        entry = await traced.get_or_create(KEY, "main", ephemeral=True)
        entry = await traced.append(entry, [rec(1)], model=None, usage=Usage(1, 1))
        await traced.read_history(entry, max_records=5)
        await traced.get(KEY)
        await traced.list_sessions()
        await traced.prune_ephemeral(max_age_seconds=0, max_count=0, in_use=())
        await traced.count()

    assert threads
    assert threading.get_ident() not in threads


async def test_slow_io_does_not_block_the_event_loop(
    store: SqliteSessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write stuck on the disk leaves the event loop free: the loop itself releases it."""
    stuck, release = threading.Event(), threading.Event()
    real_append = transcript.AppendBatch.append

    def slow_append(
        self: transcript.AppendBatch, path: Path, data: bytes, **kw: Any
    ) -> tuple[int, int]:
        stuck.set()
        assert release.wait(30), "the event loop never got to release the write"
        return real_append(self, path, data, **kw)

    monkeypatch.setattr(transcript.AppendBatch, "append", slow_append)
    entry = await store.get_or_create(KEY, "main", ephemeral=False)
    write = asyncio.create_task(store.append(entry, [rec(1)], model=None, usage=None))
    await asyncio.to_thread(stuck.wait, 30)
    # Were the loop blocked on the write, nothing below would run until it ended: a deadlock.
    await asyncio.sleep(0)
    assert not write.done()
    release.set()
    await write
    assert contents(await store.read_history(entry, max_records=None)) == ["m1"]


# --- transcript reader, property-based ----------------------------------------------------------

_line = st.one_of(
    st.integers(min_value=0, max_value=400).map(lambda n: ("ok", n)),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b).map(lambda b: ("junk", b)),
)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(_line, max_size=40),
    torn_tail=st.binary(max_size=20).filter(lambda b: b"\n" not in b),
    block_size=st.integers(min_value=1, max_value=300),
    max_records=st.one_of(st.none(), st.integers(min_value=0, max_value=45)),
)
def test_read_tail_matches_a_naive_reader(
    lines: list[tuple[str, Any]], torn_tail: bytes, block_size: int, max_records: int | None
) -> None:
    raw = b""
    for kind, value in lines:
        raw += rec(value, size=value).to_json_bytes() if kind == "ok" else value + b"\n"
    raw += torn_tail
    expected = []
    for line in raw.split(b"\n"):
        try:
            data = orjson.loads(line)
            expected.append(TranscriptRecord.from_dict(data))
        except (ValueError, AttributeError):
            continue
    if max_records is not None:
        expected = expected[max(0, len(expected) - max_records) :] if max_records else []

    logger = logging.getLogger("openclaw.sessions.transcript")
    level = logger.level
    logger.setLevel(logging.ERROR)  # junk lines warn by design; keep the output readable
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "t.jsonl"
            path.write_bytes(raw)
            got = transcript.read_tail(path, max_records, block_size=block_size)
    finally:
        logger.setLevel(level)
    assert got == expected


async def test_record_turn_batches_many_turns_and_load_reads_them(tmp_path: Path) -> None:
    from openclaw.sessions.store import Turn

    async with SqliteSessionStore(tmp_path) as store:
        turns = [
            Turn(
                key=f"agent:main:openai:{i}",
                agent_id="main",
                ephemeral=True,
                records=(
                    TranscriptRecord(role="user", content=f"q{i}", timestamp=1.0),
                    TranscriptRecord(role="assistant", content=f"a{i}", timestamp=2.0),
                ),
                model="p/m",
                usage=Usage(3, 4),
            )
            for i in range(50)
        ]
        await asyncio.gather(*(store.record_turn(t) for t in turns))
        await store.record_turn(turns[0])
        assert await store.count() == 50
        entry = await store.get("agent:main:openai:0")
        assert entry is not None and entry.ephemeral
        assert (entry.prompt_tokens, entry.completion_tokens) == (6, 8)
        records = await store.read_history(entry, max_records=None)
        assert [r.content for r in records] == ["q0", "a0", "q0", "a0"]
        loaded, tail = await store.load("agent:main:openai:7", "main", max_records=1)
        assert loaded.ephemeral and [r.content for r in tail] == ["a7"]
        with pytest.raises(ValueError):
            await store.record_turn(Turn("agent:beta:x", "main", False, (), None, None))


async def test_history_cache_sees_writes_from_another_process(tmp_path: Path) -> None:
    async with SqliteSessionStore(tmp_path) as first, SqliteSessionStore(tmp_path) as second:
        entry = await first.get_or_create(KEY, "main", ephemeral=False)
        await first.append(entry, [rec(1)], model=None, usage=None)
        assert contents(await first.read_history(entry, max_records=10)) == ["m1"]
        await first.append(entry, [rec(2)], model=None, usage=None)  # cached and extended
        assert contents(await first.read_history(entry, max_records=10)) == ["m1", "m2"]
        await second.append(entry, [rec(3)], model=None, usage=None)  # behind first's back
        assert contents(await first.read_history(entry, max_records=10)) == ["m1", "m2", "m3"]
        await first.append(entry, [rec(4)], model=None, usage=None)
        assert contents(await first.read_history(entry, max_records=2)) == ["m3", "m4"]
        assert contents(await first.read_history(entry, max_records=None)) == [
            "m1",
            "m2",
            "m3",
            "m4",
        ]


async def test_close_writes_turns_still_waiting_to_be_batched(tmp_path: Path) -> None:
    from openclaw.sessions.store import Turn

    store = SqliteSessionStore(tmp_path)
    await store.open()
    turn = Turn(
        "agent:main:openai:late",
        "main",
        True,
        (TranscriptRecord(role="user", content="q", timestamp=1.0),),
        None,
        None,
    )
    written = store.record_turn(turn)
    await store.close()  # before the batching delay has passed
    assert written.done() and written.exception() is None
    async with SqliteSessionStore(tmp_path) as again:
        entry = await again.get("agent:main:openai:late")
        assert entry is not None
        assert [r.content for r in await again.read_history(entry, max_records=None)] == ["q"]
