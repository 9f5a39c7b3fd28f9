"""The store's write path under faults: a failed write is undone whole and reported as
``StoreUnavailableError``; group commit; fsync.  Faults are real (a file size limit standing in
for a full disk, a write lock held by another connection), not mocks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from openclaw.errors import StoreUnavailableError
from openclaw.messages import Usage
from openclaw.sessions import commits as commits_module
from openclaw.sessions import index as index_module
from openclaw.sessions import transcript
from openclaw.sessions.index import SessionIndex
from openclaw.sessions.models import TranscriptRecord
from openclaw.sessions.store import SqliteSessionStore, Turn
from tests.faults import file_size_limit, index_locked


def turn(key: str, text: str, *, ephemeral: bool = False, size: int = 0) -> Turn:
    return Turn(
        key=key,
        agent_id="main",
        ephemeral=ephemeral,
        records=(
            TranscriptRecord(role="user", content=text + "x" * size, timestamp=1.0),
            TranscriptRecord(role="assistant", content="re " + text, timestamp=2.0),
        ),
        model="p/m",
        usage=Usage(3, 4),
    )


async def history(store: SqliteSessionStore, key: str) -> list[str]:
    entry = await store.get(key)
    assert entry is not None
    return [str(r.content)[:12] for r in await store.read_history(entry, max_records=None)]


def wal_size(state: Path) -> int:
    return os.path.getsize(state / "sessions.sqlite-wal")


# --- AppendBatch --------------------------------------------------------------------------------


def test_a_short_write_on_a_full_disk_is_cut_back(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    transcript.append_lines(path, b'{"role":"user","content":"a","timestamp":1}\n', fsync=False)
    before = path.read_bytes()
    batch = transcript.AppendBatch(fsync=False)
    with file_size_limit(len(before) + 10), pytest.raises(OSError):
        batch.append(path, b'{"role":"user","content":"' + b"b" * 100 + b'","timestamp":2}\n')
    batch.release(keep=True)
    assert path.read_bytes() == before  # not even the 10 bytes that fitted


def test_release_without_keep_cuts_every_file_back_to_its_start(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    transcript.append_lines(a, b"{}\n", fsync=False)
    batch = transcript.AppendBatch(fsync=False)
    assert batch.append(a, b"[1]\n") == (3, 7)
    mark = batch.mark()
    batch.append(a, b"[2]\n")
    batch.append(b, b"[3]\n")
    batch.rewind(mark)
    assert a.read_bytes() == b"{}\n[1]\n" and b.read_bytes() == b""
    batch.append(a, b"[4]\n")
    batch.release(keep=False)
    assert a.read_bytes() == b"{}\n" and b.read_bytes() == b""


def test_fsync_syncs_the_lines_and_a_new_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "agents" / "main" / "new.jsonl"
    batch = transcript.AppendBatch(fsync=True)
    batch.append(path, b"{}\n")
    batch.sync()
    batch.release(keep=True)
    # The file, the directories made for it, and the directory each new entry was made in.
    assert sorted(synced) == sorted(
        str(p) for p in (path, path.parent, path.parent.parent, tmp_path)
    )
    synced.clear()
    transcript.append_lines(path, b"{}\n", fsync=True)
    assert synced == [str(path)]
    synced.clear()
    transcript.append_lines(path, b"{}\n", fsync=False)
    assert synced == []


def test_fsync_makes_the_index_commit_synchronously(tmp_path: Path) -> None:
    for fsync, level in ((False, 1), (True, 2)):  # NORMAL, FULL
        index = SessionIndex(tmp_path / f"{fsync}.sqlite", fsync=fsync)
        try:
            assert index._db.execute("PRAGMA synchronous").fetchone() == (level,)
        finally:
            index.close()


# --- the store ----------------------------------------------------------------------------------


async def test_a_turn_the_disk_cannot_take_fails_alone_and_leaves_nothing(tmp_path: Path) -> None:
    async with SqliteSessionStore(tmp_path) as store:
        big, small = "agent:main:big", "agent:main:small"
        await store.record_turn(turn(big, "q0", size=200_000))
        await store.record_turn(turn(small, "s0"))
        entry = await store.get(big)
        assert entry is not None
        path = store.transcript_path(entry)
        size = path.stat().st_size
        assert wal_size(tmp_path) < size  # the limit below lets the index grow
        with file_size_limit(size + 50):
            # One transaction: the big session's turn no longer fits, the others do.
            results = await asyncio.gather(
                store.record_turn(turn(small, "s1")),
                store.record_turn(turn(big, "q1", size=100)),
                store.record_turn(turn("agent:main:fresh", "f0")),
                return_exceptions=True,
            )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], StoreUnavailableError)
        assert results[1].status_code == 503 and results[1].code == "store_unavailable"
        assert results[1].headers == {"Retry-After": "1"}
        assert path.stat().st_size == size
        assert await history(store, big) == ["q0xxxxxxxxxx", "re q0"]
        again = await store.get(big)
        assert again is not None and (again.prompt_tokens, again.updated_at) == (
            3,
            entry.updated_at,
        )
        assert await history(store, small) == ["s0", "re s0", "s1", "re s1"]
        assert await history(store, "agent:main:fresh") == ["f0", "re f0"]
        # The disk has room again: the session goes on from where it was.
        await store.record_turn(turn(big, "q2"))
        assert await history(store, big) == ["q0xxxxxxxxxx", "re q0", "q2", "re q2"]


async def test_a_failed_commit_cuts_the_lines_it_covered_back_off(tmp_path: Path) -> None:
    async with SqliteSessionStore(tmp_path) as store:
        key = "agent:main:s"
        await store.record_turn(turn(key, "q0"))
        entry = await store.get(key)
        assert entry is not None
        path = store.transcript_path(entry)
        size = path.stat().st_size
        # The transcript can grow, the index's write-ahead log cannot: the commit fails after
        # the lines were written.
        with file_size_limit(wal_size(tmp_path)):
            with pytest.raises(StoreUnavailableError) as failed:
                await store.record_turn(turn(key, "q1"))
            with pytest.raises(StoreUnavailableError):
                await store.append(entry, [turn(key, "q2").records[0]], model=None, usage=None)
        assert isinstance(failed.value.__cause__, sqlite3.Error)
        assert path.stat().st_size == size
        assert await history(store, key) == ["q0", "re q0"]
        await store.record_turn(turn(key, "q3"))
        assert await history(store, key) == ["q0", "re q0", "q3", "re q3"]


async def test_a_locked_index_fails_the_write_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "BUSY_TIMEOUT_SECONDS", 0.05)
    async with SqliteSessionStore(tmp_path) as store:
        key = "agent:main:s"
        await store.record_turn(turn(key, "q0"))
        with index_locked(tmp_path):
            for ephemeral in (False, True):
                with pytest.raises(StoreUnavailableError):
                    await store.record_turn(turn(key if not ephemeral else "agent:main:e", "q1"))
        assert await history(store, key) == ["q0", "re q0"]
        assert await store.get("agent:main:e") is None
        await store.record_turn(turn(key, "q2"))
        assert await history(store, key) == ["q0", "re q0", "q2", "re q2"]


async def test_turns_queued_during_a_commit_share_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit without a timer: the first turn goes at once; the ones that arrive while it
    is being written go together in one more transaction."""
    begins: list[str] = []
    real_connect = sqlite3.connect

    def traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = real_connect(*args, **kwargs)
        db.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
        return db

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    entered, release = threading.Event(), threading.Event()
    real_append: Callable[..., tuple[int, int]] = transcript.AppendBatch.append

    def held_append(
        self: transcript.AppendBatch, path: Path, data: bytes, **kw: Any
    ) -> tuple[int, int]:
        if b'"first"' in data:
            entered.set()
            release.wait(30)
        return real_append(self, path, data, **kw)

    monkeypatch.setattr(transcript.AppendBatch, "append", held_append)
    async with SqliteSessionStore(tmp_path) as store:
        begins.clear()
        first = store.record_turn(turn("agent:main:a", "first"))
        await asyncio.to_thread(entered.wait, 30)  # the first write is in flight
        later = [
            store.record_turn(turn(f"agent:main:{i}", str(i), ephemeral=i % 2 == 0))
            for i in range(20)
        ]
        release.set()
        await asyncio.gather(first, *later)
        assert begins == ["BEGIN IMMEDIATE", "BEGIN IMMEDIATE"]
        assert await store.count() == 21


async def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    store = SqliteSessionStore(tmp_path)
    await store.open()
    written = [store.record_turn(turn(f"agent:main:{i}", str(i))) for i in range(5)]
    await store.close()
    assert all(w.done() and w.exception() is None for w in written)
    async with SqliteSessionStore(tmp_path) as again:
        assert await again.count() == 5


async def test_when_sqlite_rolls_back_the_whole_commit_every_turn_in_it_fails(
    tmp_path: Path,
) -> None:
    """A big turn spills pages to the write-ahead log mid-transaction and the disk is full:
    SQLite rolls back everything, so the turns before and after it fail too (none is left
    half-committed: a row without its lines, or lines without their reply)."""
    async with SqliteSessionStore(tmp_path) as store:
        await store.record_turn(turn("agent:main:a", "a0"))
        with file_size_limit(wal_size(tmp_path) + 8192):
            results = await asyncio.gather(
                store.record_turn(turn("agent:main:a", "a1")),
                store.record_turn(turn("agent:main:big", "b", ephemeral=True, size=4_000_000)),
                store.record_turn(turn("agent:main:c", "c0")),
                return_exceptions=True,
            )
        assert [type(r) for r in results] == [StoreUnavailableError] * 3
        assert len({id(r) for r in results}) == 3  # one error object per waiting run
        assert await history(store, "agent:main:a") == ["a0", "re a0"]
        assert await store.get("agent:main:big") is None
        assert await store.get("agent:main:c") is None


async def test_one_commit_holds_a_bounded_number_of_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[int] = []
    real_sync = transcript.AppendBatch.sync

    def sync(self: transcript.AppendBatch) -> None:
        held.append(len(self))
        real_sync(self)

    monkeypatch.setattr(transcript.AppendBatch, "sync", sync)
    async with SqliteSessionStore(tmp_path) as store:
        n = 3 * commits_module.MAX_FILES_PER_COMMIT + 5
        await asyncio.gather(
            *(store.record_turn(turn(f"agent:main:{i}", str(i))) for i in range(n))
        )
        # The first turn is written at once, alone; the others queue behind it and go in
        # commits of at most MAX_FILES_PER_COMMIT files.
        assert held == [1, 64, 64, 64, 4]
        assert await store.count() == n


async def test_an_index_from_before_committed_lengths_is_upgraded_in_place(tmp_path: Path) -> None:
    """Schema 1 (no ``transcript_bytes``): each stored session's committed length is its
    transcript's size at the upgrade."""
    with sqlite3.connect(tmp_path / "sessions.sqlite") as db:
        db.execute(
            "CREATE TABLE sessions (key TEXT PRIMARY KEY NOT NULL, session_id TEXT NOT NULL,"
            " agent_id TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
            " model TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0,"
            " completion_tokens INTEGER NOT NULL DEFAULT 0, ephemeral INTEGER NOT NULL)"
            " WITHOUT ROWID"
        )
        db.execute("INSERT INTO sessions VALUES ('agent:main:old', 'old-id', 'main', 1, 1, NULL,"
                   " 0, 0, 0)")  # fmt: skip
        db.execute("PRAGMA user_version = 1")
    old = tmp_path / "agents" / "main" / "sessions" / "old-id.jsonl"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"".join(r.to_json_bytes() for r in turn("agent:main:old", "q0").records))
    async with SqliteSessionStore(tmp_path) as store:
        entry = await store.get("agent:main:old")
        assert entry is not None and entry.transcript_bytes == old.stat().st_size
        assert await history(store, "agent:main:old") == ["q0", "re q0"]
        await store.record_turn(turn("agent:main:old", "q1"))
        entry = await store.get("agent:main:old")
        assert entry is not None and entry.transcript_bytes == old.stat().st_size
        assert await history(store, "agent:main:old") == ["q0", "re q0", "q1", "re q1"]
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.sqlite")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (index_module.SCHEMA_VERSION,)
        # A gateway of the old version still running fails loudly instead of writing behind
        # the new one's back.
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            db.execute("UPDATE sessions SET updated_at = 2")


async def test_a_deleted_session_reads_as_empty_even_from_an_old_entry(tmp_path: Path) -> None:
    async with SqliteSessionStore(tmp_path) as store:
        await store.record_turn(turn("agent:main:s", "secret"))
        entry = await store.get("agent:main:s")
        assert entry is not None
        assert await history(store, "agent:main:s") == ["secret", "re secret"]  # now cached
        assert await store.delete("agent:main:s")
        assert await store.read_history(entry, max_records=None) == []
        await store.record_turn(turn("agent:main:s", "new"))  # the key again, a new session
        assert await store.read_history(entry, max_records=None) == []
        assert await history(store, "agent:main:s") == ["new", "re new"]


async def test_turns_are_counted_and_an_index_from_before_gets_the_column(tmp_path: Path) -> None:
    """Schema 4 counts turns (user messages); schema 3 is upgraded in place: a per-request
    session's count is its rows, a stored session's stays unknown (None) but counts on."""
    async with SqliteSessionStore(tmp_path) as store:
        for text in ("a", "b"):
            await store.record_turn(turn("agent:main:kept", text))
        await store.record_turn(turn("agent:main:eph", "x", ephemeral=True))
        kept = await store.get("agent:main:kept")
        eph = await store.get("agent:main:eph")
        assert kept is not None and kept.turns == 2
        assert eph is not None and eph.turns == 1
    # The same index as schema 3 wrote it: no `turns` column.
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.sqlite")) as db:
        db.execute("ALTER TABLE session_index DROP COLUMN turns")
        db.execute("PRAGMA user_version = 3")
        db.commit()
    async with SqliteSessionStore(tmp_path) as store:
        kept = await store.get("agent:main:kept")
        eph = await store.get("agent:main:eph")
        assert kept is not None and kept.turns is None
        assert eph is not None and eph.turns == 1
        await store.record_turn(turn("agent:main:kept", "c"))
        kept = await store.get("agent:main:kept")
        assert kept is not None and kept.turns is None
        assert await history(store, "agent:main:kept") == ["a", "re a", "b", "re b", "c", "re c"]
        await store.record_turn(turn("agent:main:new", "n"))
        new = await store.get("agent:main:new")
        assert new is not None and new.turns == 1
    with contextlib.closing(sqlite3.connect(tmp_path / "sessions.sqlite")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (index_module.SCHEMA_VERSION,)
