"""The SQLite session index: one row per session key, every per-request call a point query.

Blocking and not thread-safe: one ``SessionIndex`` belongs to one worker thread, which must create,
use and close it.  Several processes may open the same file; WAL plus a busy timeout lets them
share it, and every multi-statement write takes the write lock up front (``BEGIN IMMEDIATE``)
so it waits for the lock instead of failing half-way.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from openclaw.logs import get_logger
from openclaw.paths import create_private_file, make_private_dir
from openclaw.sessions import responses
from openclaw.sessions.keys import ascii_lower
from openclaw.sessions.models import SessionEntry
from openclaw.sessions.responses import ResponseTable, StoredResponse

# 3: stored Responses API responses (``responses``), made on open.
SCHEMA_VERSION = 4
BUSY_TIMEOUT_SECONDS = 10.0
_PRUNE_BATCH = 500

log = get_logger("sessions.index")

_COLUMNS = (
    "key, session_id, agent_id, created_at, updated_at, model,"
    " prompt_tokens, completion_tokens, ephemeral, transcript_bytes, turns"
)

# WITHOUT ROWID: the table is clustered on the key, so a lookup by key is one B-tree descent.
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS session_index (
        key TEXT PRIMARY KEY NOT NULL,
        session_id TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        model TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        ephemeral INTEGER NOT NULL,
        transcript_bytes INTEGER,
        turns INTEGER
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS session_index_agent_updated"
    " ON session_index (agent_id, updated_at)",
    "CREATE INDEX IF NOT EXISTS session_index_ephemeral_updated"
    " ON session_index (ephemeral, updated_at)",
    # Transcripts of per-request (ephemeral) sessions: a row per line instead of a file per
    # request.  Creating a file cost ~0.6 ms on the measured disks, a row a few microseconds,
    # and a client that sends no `user` (Open WebUI) makes one such session per message.
    # Clustered on (session, turn): one B-tree to write per turn, and a session's turns together.
    """
    CREATE TABLE IF NOT EXISTS ephemeral_turns (
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        lines BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID
    """,
    *responses.SCHEMA,
)

_APPEND_TURN = (
    "INSERT INTO ephemeral_turns (session_id, seq, lines) VALUES"
    " (?, (SELECT COALESCE(MAX(seq) + 1, 0) FROM ephemeral_turns WHERE session_id = ?), ?)"
)
_SELECT_BY_KEY = f"SELECT {_COLUMNS} FROM session_index WHERE key = ?"
_INSERT_IGNORE = (
    f"INSERT OR IGNORE INTO session_index ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RECORD_APPEND = f"""
    UPDATE session_index
    SET updated_at = ?,
        model = COALESCE(?, model),
        prompt_tokens = prompt_tokens + ?,
        completion_tokens = completion_tokens + ?,
        transcript_bytes = COALESCE(?, transcript_bytes),
        turns = turns + ?
    WHERE key = ? AND session_id = ?
    RETURNING {_COLUMNS}
"""
_EPHEMERAL_OLDEST_FIRST = (
    "SELECT key, session_id, agent_id, updated_at FROM session_index"
    f" WHERE ephemeral = 1 AND key NOT IN ({responses.REFERENCED_SESSIONS})"
    " ORDER BY updated_at ASC"
)
# Deletes only the exact row that was selected: one touched meanwhile (by another process) stays.
_DELETE_IF_UNCHANGED = (
    "DELETE FROM session_index WHERE key = ? AND session_id = ? AND updated_at = ?"
)


class DeletedSession(NamedTuple):
    """What is needed to remove a deleted session's transcript."""

    key: str
    session_id: str
    agent_id: str


def _entry(row: tuple[Any, ...]) -> SessionEntry:
    return SessionEntry(
        key=row[0],
        session_id=row[1],
        agent_id=row[2],
        created_at=row[3],
        updated_at=row[4],
        model=row[5],
        prompt_tokens=row[6],
        completion_tokens=row[7],
        ephemeral=bool(row[8]),
        transcript_bytes=row[9],
        turns=row[10],
    )


def _row(entry: SessionEntry) -> tuple[Any, ...]:
    return (
        entry.key,
        entry.session_id,
        entry.agent_id,
        entry.created_at,
        entry.updated_at,
        entry.model,
        entry.prompt_tokens,
        entry.completion_tokens,
        int(entry.ephemeral),
        entry.transcript_bytes,
        entry.turns,
    )


def bumped(
    entry: SessionEntry,
    now: float,
    model: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    transcript_bytes: int | None = None,
    turns: int = 0,
) -> SessionEntry:
    """``entry`` as it is after one append: what the UPDATE of ``record_append`` computes."""
    return replace(
        entry,
        updated_at=now,
        model=model if model is not None else entry.model,
        prompt_tokens=entry.prompt_tokens + prompt_tokens,
        completion_tokens=entry.completion_tokens + completion_tokens,
        transcript_bytes=(
            transcript_bytes if transcript_bytes is not None else entry.transcript_bytes
        ),
        turns=None if entry.turns is None else entry.turns + turns,
    )


def _enable_wal(db: sqlite3.Connection) -> None:
    """Put the file in WAL mode, waiting (up to the busy timeout) for other processes.

    The switch reads the file header under a shared lock, then upgrades to a write lock to
    change it.  SQLite never calls the busy handler for such an upgrade (two upgraders would
    deadlock), so while another process is switching or creating the same new file the pragma
    fails at once with SQLITE_BUSY, busy timeout or not.  Retried here; once one process has
    switched, the mode is stored in the file and the pragma no longer writes anything.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    delay = 0.001
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class SessionIndex:
    """Blocking access to ``sessions.sqlite``; see the module docstring for the threading rule."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool = False,
        transcript_size: Callable[[str, str], int] = lambda agent_id, session_id: 0,
    ) -> None:
        """Open (creating or upgrading) the index.  ``transcript_size(agent_id, session_id)``
        is the size of a stored session's transcript, for the upgrade from schema 1."""
        make_private_dir(path.parent)
        # SQLite creates its -wal and -shm files with the database file's mode.
        create_private_file(path)
        # isolation_level=None: autocommit, so single statements never hold a lock longer than
        # themselves and transactions are exactly the ones written out below.
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            _enable_wal(self._db)
            # NORMAL in WAL mode: a commit is in the OS's hands once COMMIT returns, so it survives
            # a killed process; a power cut may lose the last commits, never corrupts the file.
            # FULL syncs the WAL on every commit: commits survive a power cut too.
            self._db.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")
            with self._transaction():
                (version,) = self._db.execute("PRAGMA user_version").fetchone()
                if version > SCHEMA_VERSION:
                    raise RuntimeError(
                        f"{path} has schema version {version}; this gateway knows {SCHEMA_VERSION}"
                    )
                for statement in _SCHEMA:
                    self._db.execute(statement)
                if version == 1:
                    self._upgrade_from_v1(transcript_size)
                elif 2 <= version < 4:
                    self._add_turns()
                if version < SCHEMA_VERSION:
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise
        self.responses = ResponseTable(self._db)

    def _upgrade_from_v1(self, transcript_size: Callable[[str, str], int]) -> None:
        """Schema 1 -> 2: rows move to ``session_index`` with their transcript's committed length
        (its size now), in the transaction that bumps the version.  The old table is dropped
        rather than altered, so a gateway of the old version still running on this state dir
        fails its next statement loudly instead of writing lines the new one would not count."""
        rows = self._db.execute(
            "SELECT key, session_id, agent_id, created_at, updated_at, model,"
            " prompt_tokens, completion_tokens, ephemeral FROM sessions"
        ).fetchall()
        self._db.executemany(
            _INSERT_IGNORE,
            ((*row, None if row[8] else transcript_size(row[2], row[1]), None) for row in rows),
        )
        self._db.execute("DROP TABLE sessions")
        log.info("session index upgraded to schema 2", extra={"sessions": len(rows)})

    def _add_turns(self) -> None:
        """Schema 2 or 3 -> 4: the count of turns.  A per-request session's is its rows (one
        per turn); a stored session's stays unknown (NULL) rather than reading every transcript
        during start-up."""
        self._db.execute("ALTER TABLE session_index ADD COLUMN turns INTEGER")
        self._db.execute(
            "UPDATE session_index SET turns = (SELECT COUNT(*) FROM ephemeral_turns"
            " WHERE ephemeral_turns.session_id = session_index.session_id) WHERE ephemeral = 1"
        )

    def close(self) -> None:
        """Close the connection (lets SQLite refresh its planner statistics first)."""
        try:
            self._db.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass  # best effort: e.g. the database is busy in another process
        finally:
            self._db.close()

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (SQLite ends one by itself on some errors)."""
        return self._db.in_transaction

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction around several calls (they are otherwise one each)."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (busy, disk full) leaves the transaction open; some errors (I/O,
            # full) have already rolled it back, and ROLLBACK would then fail too.
            self._rollback("ROLLBACK")
            raise

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside ``transaction()``: the calls in the block are undone together if it raises,
        without undoing the rest of the transaction.  If SQLite rolled back the whole
        transaction on the error (disk full or I/O while spilling pages), ``in_transaction``
        is then False: the caller must fail the whole transaction, not just the block."""
        if not self._db.in_transaction:
            raise RuntimeError("savepoint() outside a transaction")
        self._db.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            # ROLLBACK TO keeps the savepoint open; RELEASE then closes it, changing nothing.
            self._rollback("ROLLBACK TO part", "RELEASE part")
            raise
        self._db.execute("RELEASE part")

    def _rollback(self, *statements: str) -> None:
        if not self._db.in_transaction:
            return
        try:
            for statement in statements:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            # The error already being raised is the one to report.
            log.error("index rollback failed", extra={"error": str(exc)})

    def get(self, key: str) -> SessionEntry | None:
        """The row for ``key``, if any."""
        row = self._db.execute(_SELECT_BY_KEY, (key,)).fetchone()
        return None if row is None else _entry(row)

    def get_or_insert(self, entry: SessionEntry) -> SessionEntry:
        """The existing row for ``entry.key``, else ``entry`` inserted; first writer wins."""
        existing = self.get(entry.key)
        if existing is not None:
            return existing
        self._db.execute(_INSERT_IGNORE, _row(entry))
        stored = self.get(entry.key)
        # Only a concurrent delete between the two statements gets here; the insert is then ours.
        return entry if stored is None else stored

    def record_append(
        self,
        entry: SessionEntry,
        *,
        now: float,
        model: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        transcript_bytes: int | None = None,
        turns: int = 0,
    ) -> SessionEntry | None:
        """Bump time, model, token totals and (if given) the committed transcript length of
        ``entry``'s row.

        When the row is gone (deleted or pruned mid-run) it is put back, so the transcript just
        written stays reachable.  None when the key now belongs to another session.
        """
        params = (
            now,
            model,
            prompt_tokens,
            completion_tokens,
            transcript_bytes,
            turns,
            entry.key,
            entry.session_id,
        )
        # fetchall: with RETURNING, the change is only complete once every row has been stepped.
        rows = self._db.execute(_RECORD_APPEND, params).fetchall()
        if rows:
            return _entry(rows[0])
        revived = bumped(
            entry, now, model, prompt_tokens, completion_tokens, transcript_bytes, turns
        )
        cursor = self._db.execute(_INSERT_IGNORE, _row(revived))
        return revived if cursor.rowcount == 1 else None

    def list_entries(
        self,
        agent_id: str | None,
        *,
        limit: int,
        include_ephemeral: bool,
        search: str | None = None,
    ) -> list[SessionEntry]:
        """Rows newest-updated first, optionally for one agent, without ephemeral ones, and
        whose key contains ``search`` (ASCII letters matched in any case)."""
        where: list[str] = []
        params: list[Any] = []
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if not include_ephemeral:
            where.append("ephemeral = 0")
        if search:
            where.append("instr(lower(key), ?) > 0")
            params.append(ascii_lower(search))
        sql = f"SELECT {_COLUMNS} FROM session_index"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY updated_at DESC LIMIT ?"
        return [_entry(row) for row in self._db.execute(sql, (*params, limit))]

    def insert_new(self, entry: SessionEntry) -> bool:
        """Insert ``entry`` if its key is free; whether it was inserted."""
        return self._db.execute(_INSERT_IGNORE, _row(entry)).rowcount == 1

    def append_lines(self, session_id: str, lines: Iterable[bytes]) -> None:
        """Store transcript lines of an ephemeral session."""
        for line in lines:
            self._db.execute(_APPEND_TURN, (session_id, session_id, line))

    def insert_first_lines(self, session_id: str, lines: bytes) -> None:
        """The first transcript row of a new ephemeral session (no look-up of the last one)."""
        self._db.execute(
            "INSERT INTO ephemeral_turns (session_id, seq, lines) VALUES (?, 0, ?)",
            (session_id, lines),
        )

    def tail_lines(self, session_id: str, limit: int | None) -> list[bytes]:
        """The last ``limit`` lines (None: all) of an ephemeral session, oldest first."""
        rows = self._db.execute(
            "SELECT lines FROM ephemeral_turns WHERE session_id = ? ORDER BY seq DESC LIMIT ?",
            (session_id, -1 if limit is None else limit),
        ).fetchall()
        return [bytes(row[0]) for row in reversed(rows)]

    def _drop_lines(self, session_id: str) -> None:
        self._db.execute("DELETE FROM ephemeral_turns WHERE session_id = ?", (session_id,))

    def delete(self, key: str) -> DeletedSession | None:
        """Delete the row for ``key`` (and stored lines); what it was, or None if none."""
        with self._transaction():
            row = self._db.execute(
                "DELETE FROM session_index WHERE key = ? RETURNING key, session_id, agent_id",
                (key,),
            ).fetchall()  # fetchall: see record_append
            if row:
                self._drop_lines(row[0][1])
        return DeletedSession(*row[0]) if row else None

    def prune_ephemeral(
        self, *, cutoff: float, max_count: int, in_use: Collection[str]
    ) -> list[DeletedSession]:
        """Delete ephemeral rows updated before ``cutoff`` and the oldest beyond ``max_count``.

        Rows whose key is in ``in_use`` are never deleted but do count towards ``max_count``.
        """
        # Sessions a stored response continues are not candidates, so they do not count.
        (remaining,) = self._db.execute(
            "SELECT COUNT(*) FROM session_index WHERE ephemeral = 1"
            f" AND key NOT IN ({responses.REFERENCED_SESSIONS})"
        ).fetchone()
        doomed: list[tuple[str, str, str, float]] = []
        # Oldest first, so the scan stops at the first row that is young enough and within count;
        # its cost follows the rows deleted, not the table size.
        cursor = self._db.execute(_EPHEMERAL_OLDEST_FIRST)
        try:
            for key, session_id, agent_id, updated_at in cursor:
                if key in in_use:
                    continue
                if updated_at >= cutoff and remaining <= max_count:
                    break
                doomed.append((key, session_id, agent_id, updated_at))
                remaining -= 1
        finally:
            # An unfinished SELECT keeps its read snapshot open, which would block the writes below.
            cursor.close()
        deleted: list[DeletedSession] = []
        # Small transactions: a big prune must not hold the write lock other processes wait on.
        for start in range(0, len(doomed), _PRUNE_BATCH):
            with self._transaction():
                for key, session_id, agent_id, updated_at in doomed[start : start + _PRUNE_BATCH]:
                    done = self._db.execute(_DELETE_IF_UNCHANGED, (key, session_id, updated_at))
                    if done.rowcount == 1:
                        self._drop_lines(session_id)
                        deleted.append(DeletedSession(key, session_id, agent_id))
        return deleted

    # --- stored responses ------------------------------------------------------------------------

    def save_response(self, response: StoredResponse, previous: str | None) -> None:
        """Store ``response`` (and mark the one it continues as used now), in one transaction."""
        with self._transaction():
            self.responses.insert(response)
            if previous is not None:
                self.responses.touch(previous, response.created_at)

    def delete_response(self, response_id: str) -> tuple[bool, DeletedSession | None]:
        """Delete a response, and its session when that was a per-response one no other
        response continues; (whether there was one, the session deleted)."""
        with self._transaction():
            key = self.responses.delete(response_id)
            if key is None:
                return False, None
            return True, self._drop_if_orphaned(key)

    def prune_responses(self, cutoff: float) -> tuple[int, list[DeletedSession]]:
        """Delete responses last used before ``cutoff`` (in small transactions), and the
        per-response sessions left without one; (responses deleted, sessions deleted)."""
        count = 0
        sessions: list[DeletedSession] = []
        while True:
            with self._transaction():
                batch = self.responses.expired(cutoff, _PRUNE_BATCH)
                for response_id, _ in batch:
                    self.responses.delete(response_id)
                for key in {key for _, key in batch}:
                    gone = self._drop_if_orphaned(key)
                    if gone is not None:
                        sessions.append(gone)
            count += len(batch)
            if len(batch) < _PRUNE_BATCH:
                return count, sessions

    def _drop_if_orphaned(self, key: str) -> DeletedSession | None:
        if self.responses.referenced(key):
            return None
        rows = self._db.execute(
            "DELETE FROM session_index WHERE key = ? AND ephemeral = 1"
            " RETURNING key, session_id, agent_id",
            (key,),
        ).fetchall()
        if not rows:
            return None  # a stored session (a `user`, a session key): it stays
        self._drop_lines(rows[0][1])
        return DeletedSession(*rows[0])

    def count(self) -> int:
        """Number of rows."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM session_index").fetchone()
        return int(n)

    def insert_many(self, entries: Iterable[SessionEntry]) -> int:
        """Insert rows whose key is new, in one transaction; how many were inserted."""
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(_INSERT_IGNORE, (_row(e) for e in entries))
            return self._db.total_changes - before
