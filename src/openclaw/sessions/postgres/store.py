"""The shared session store on PostgreSQL (``PostgresSessionStore``), for gateway replicas.

Same protocol as the embedded store (``SessionStore``); nothing above it knows which one runs.
A session is a row of ``oc_sessions``; its transcript is rows of ``oc_records`` numbered from 0,
each the JSON line the embedded store would write.  A turn's write bumps the session's row
(creating it when missing) and appends its records in one transaction: the row's lock orders
concurrent writers of one session, whichever replica they run on, and a crash leaves either the
whole turn or none of it.  ``record_turn`` futures are done once the transaction has committed
(durable before answered); turns queued while a write is in flight share the next transaction
(``GroupCommit``), each under its own savepoint, so one bad turn does not fail the others.

Connection failures, server restarts and timeouts reach callers as ``StoreUnavailableError``
(503); the pool replaces broken connections by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from openclaw.errors import StoreUnavailableError
from openclaw.ids import uuid7_str
from openclaw.messages import Usage
from openclaw.sessions import transcript
from openclaw.sessions.base import STORAGE_ERRORS, SessionStore, Turn, log, store_error
from openclaw.sessions.commits import GroupCommit
from openclaw.sessions.index import bumped
from openclaw.sessions.keys import ascii_lower, is_valid_key
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.sessions.postgres import schema as migrations
from openclaw.sessions.responses import StoredResponse
from openclaw.sessions.writes import check_key

_PRUNE_BATCH = 500
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_COLUMNS = (
    "key, session_id, agent_id, created_at, updated_at, model, prompt_tokens,"
    " completion_tokens, ephemeral, turns"
)
_RESPONSE_COLUMNS = (
    "id, owner, agent_id, session_key, run_id, created_at, used_at, body, input_items"
)
# One turn in one statement: create the session or bump it, and append its records numbered
# on from its count (the row's lock orders concurrent writers of one session).  Alone, it is its
# own transaction: one round trip per committed turn.
_WRITE_TURN = f"""
    WITH s AS (
        INSERT INTO oc_sessions AS s ({_COLUMNS}, records)
        VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, cardinality($10::text[]))
        ON CONFLICT (key) DO UPDATE SET
            updated_at = excluded.updated_at,
            model = COALESCE(excluded.model, s.model),
            prompt_tokens = s.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = s.completion_tokens + excluded.completion_tokens,
            turns = s.turns + excluded.turns,
            records = s.records + excluded.records
        WHERE $11::bigint IS NULL OR s.records = $11
        RETURNING {_COLUMNS}, records, records - cardinality($10::text[]) AS first
    ), appended AS (
        INSERT INTO oc_records (session_id, seq, line)
        SELECT s.session_id, s.first + t.ordinality - 1, t.line
        FROM s, unnest($10::text[]) WITH ORDINALITY AS t(line, ordinality)
    )
    SELECT {_COLUMNS}, records FROM s
"""
# A run's start in one round trip: the session (made when missing) and its last records.
_LOAD = f"""
    WITH made AS (
        INSERT INTO oc_sessions ({_COLUMNS}) VALUES ($1, $2, $3, $4, $4, NULL, 0, 0, FALSE, 0)
        ON CONFLICT (key) DO NOTHING
        RETURNING {_COLUMNS}, records
    ), found AS (
        SELECT {_COLUMNS}, records FROM made
        UNION ALL
        SELECT {_COLUMNS}, records FROM oc_sessions
        WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM made)
    )
    SELECT found.*, ARRAY(
        SELECT line FROM (
            SELECT line, seq FROM oc_records WHERE session_id = found.session_id
            ORDER BY seq DESC LIMIT $5
        ) AS tail ORDER BY seq
    ) AS lines
    FROM found
"""
_APPEND_AT_START = """
    INSERT INTO oc_records (session_id, seq, line)
    SELECT $1, ordinality - 1, line FROM unnest($2::text[]) WITH ORDINALITY AS t(line)
"""
_TAIL = "SELECT line FROM oc_records WHERE session_id = $1 ORDER BY seq DESC LIMIT $2"
_NOT_REFERENCED = "NOT EXISTS (SELECT 1 FROM oc_responses r WHERE r.session_key = s.key)"


def _entry(row: asyncpg.Record) -> SessionEntry:
    return SessionEntry(
        key=row["key"],
        session_id=row["session_id"],
        agent_id=row["agent_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        model=row["model"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        ephemeral=row["ephemeral"],
        turns=row["turns"],
        records=row["records"],
    )


def _stored(row: asyncpg.Record) -> StoredResponse:
    return StoredResponse(
        row["id"],
        row["owner"],
        row["agent_id"],
        row["session_key"],
        row["run_id"],
        row["created_at"],
        row["used_at"],
        bytes(row["body"]),
        bytes(row["input_items"]),
    )


def _lines(records: Sequence[TranscriptRecord]) -> list[str]:
    # The embedded store's JSONL line, without its newline.
    return [record.to_json_bytes()[:-1].decode() for record in records]


class PostgresSessionStore:
    """Sessions, transcripts and stored responses in a PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        statement_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        migrate: bool = True,
    ) -> None:
        """``migrate``: apply pending migrations when opening (the gateway); without, a
        database that is not at this version is refused (a reading command)."""
        self._url = url
        self._migrate = migrate
        self.schema = schema
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._clock = clock
        self._pool: asyncpg.Pool | None = None
        self._commits = GroupCommit(lambda turns: asyncio.ensure_future(self._write(turns)))

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Apply pending migrations (under the migration lock), then open the pool."""
        if self._pool is not None:
            raise RuntimeError("session store is already open")
        try:
            conn = await connect(self._url, connect_timeout=self._connect_timeout)
            try:
                if self._migrate:
                    await migrations.migrate(conn, self.schema)
                else:
                    await migrations.require_current(conn, self.schema)
            finally:
                await conn.close()
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                command_timeout=self._statement_timeout,
                server_settings=self.server_settings(),
            )
        except STORAGE_ERRORS as exc:
            raise store_error(exc) from exc

    def server_settings(self) -> dict[str, str]:
        """Every connection's session settings: our schema, and a server-side statement limit
        (a statement the client gave up on does not go on holding locks)."""
        return {
            "search_path": f'"{self.schema}"',
            "statement_timeout": str(int(self._statement_timeout * 1000)),
            # Named with the schema, so an operator (or a test) can tell the gateways apart.
            "application_name": f"openclaw-gateway:{self.schema}"[:63],
        }

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        await self._commits.drain()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                # Bounded: a server that no longer answers must not hold up a shutdown.
                await asyncio.wait_for(pool.close(), self._connect_timeout)
            except TimeoutError:
                pool.terminate()

    async def __aenter__(self) -> PostgresSessionStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- sessions ------------------------------------------------------------------------------

    async def get(self, key: str) -> SessionEntry | None:
        if not is_valid_key(key):
            return None
        row = await self._fetchrow(
            f"SELECT {_COLUMNS}, records FROM oc_sessions WHERE key = $1", key
        )
        return None if row is None else _entry(row)

    async def get_or_create(self, key: str, agent_id: str, *, ephemeral: bool) -> SessionEntry:
        check_key(key, agent_id)
        now = self._clock()
        async with self._conn() as conn:
            return await _get_or_insert(conn, key, agent_id, ephemeral, now)

    async def list_sessions(
        self,
        agent_id: str | None = None,
        *,
        limit: int = 100,
        include_ephemeral: bool = True,
        search: str | None = None,
    ) -> list[SessionEntry]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        where: list[str] = []
        params: list[Any] = []
        if agent_id is not None:
            params.append(agent_id)
            where.append(f"agent_id = ${len(params)}")
        if not include_ephemeral:
            where.append("NOT ephemeral")
        if search and "\x00" in search:
            return []  # no key holds one
        if search:
            # ASCII letters in any case, others exactly, as the embedded store matches.
            params.append(ascii_lower(search))
            where.append(
                f"strpos(translate(key, '{_UPPER}', '{_UPPER.lower()}'), ${len(params)}) > 0"
            )
        sql = f"SELECT {_COLUMNS}, records FROM oc_sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        params.append(limit)
        sql += f" ORDER BY updated_at DESC LIMIT ${len(params)}"
        return [_entry(row) for row in await self._fetch(sql, *params)]

    async def read_history(
        self, entry: SessionEntry, *, max_records: int | None
    ) -> list[TranscriptRecord]:
        if max_records is not None and max_records <= 0:
            if max_records < 0:
                raise ValueError("max_records must be >= 0")
            return []
        async with self._conn() as conn:
            return await _tail(conn, entry, max_records)

    async def append(
        self,
        entry: SessionEntry,
        records: Sequence[TranscriptRecord],
        *,
        model: str | None,
        usage: Usage | None,
    ) -> SessionEntry:
        if usage is not None and (usage.prompt_tokens < 0 or usage.completion_tokens < 0):
            raise ValueError("token counts must be >= 0")
        turn = Turn(entry.key, entry.agent_id, entry.ephemeral, tuple(records), model, usage)
        now = self._clock()
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        async with self._conn() as conn, conn.transaction():
            current = await conn.fetchval(
                "SELECT session_id FROM oc_sessions WHERE key = $1 FOR UPDATE", entry.key
            )
            if current == entry.session_id:
                return await _write_turn(conn, turn, now)
            if current is None:
                # Deleted during the run: put back under the same id with its totals, as the
                # embedded store does (unless another writer made the key anew meanwhile).
                revived = bumped(entry, now, model, prompt, completion)
                turns = None if revived.turns is None else revived.turns + _user_turns(turn)
                lines = _lines(turn.records)
                made = await insert_entry(conn, replace(revived, turns=turns, records=len(lines)))
                if made:
                    if lines:
                        await conn.execute(_APPEND_AT_START, revived.session_id, lines)
                    return replace(revived, turns=turns, records=len(lines))
            # The key was deleted and made anew during the run (the embedded store does the
            # same): the new session is not written into.
            log.warning(
                "session key was re-created during the run; index row left unchanged",
                extra={"session_key": entry.key, "session_id": entry.session_id},
            )
            return bumped(entry, now, model, prompt, completion)

    async def load(
        self, key: str, agent_id: str, *, max_records: int | None
    ) -> tuple[SessionEntry, list[TranscriptRecord]]:
        check_key(key, agent_id)
        if max_records is not None and max_records < 0:
            raise ValueError("max_records must be >= 0")
        limit = max_records
        async with self._conn() as conn:
            row = await conn.fetchrow(_LOAD, key, uuid7_str(), agent_id, self._clock(), limit)
            if row is None:
                # Made by another writer after this statement's snapshot was taken: it is
                # there now.
                entry = await _get_or_insert(conn, key, agent_id, False, self._clock())
                return entry, await _tail(conn, entry, limit)
            entry = _entry(row)
            return entry, _records(entry, row["lines"])

    def record_turn(self, turn: Turn) -> asyncio.Future[None]:
        check_key(turn.key, turn.agent_id)
        self._open_pool()  # refuses when closed
        return self._commits.add(turn)

    async def delete(self, key: str) -> bool:
        if not is_valid_key(key):
            return False
        async with self._conn() as conn, conn.transaction():
            session_id = await conn.fetchval(
                "DELETE FROM oc_sessions WHERE key = $1 RETURNING session_id", key
            )
            if session_id is None:
                return False
            await conn.execute("DELETE FROM oc_records WHERE session_id = $1", session_id)
            return True

    async def prune_ephemeral(
        self, *, max_age_seconds: float, max_count: int, in_use: Collection[str]
    ) -> int:
        """As the embedded store: idle ones, then the oldest beyond ``max_count``; never one in
        ``in_use`` or one a stored response continues.  In small transactions, each deleting
        only rows unchanged since they were read (another replica may be using them)."""
        if max_count < 0:
            raise ValueError("max_count must be >= 0")
        spared = frozenset(in_use)
        cutoff = self._clock() - max_age_seconds
        async with self._conn() as conn:
            remaining = await conn.fetchval(
                f"SELECT count(*) FROM oc_sessions s WHERE ephemeral AND {_NOT_REFERENCED}"
            )
            doomed: list[tuple[str, str, float]] = []
            after: tuple[float, str] = (float("-inf"), "")
            while True:
                rows = await conn.fetch(
                    "SELECT key, session_id, updated_at FROM oc_sessions s"
                    f" WHERE ephemeral AND {_NOT_REFERENCED} AND (updated_at, key) > ($1, $2)"
                    " ORDER BY updated_at, key LIMIT $3",
                    after[0],
                    after[1],
                    _PRUNE_BATCH,
                )
                stop = False
                for key, session_id, updated_at in rows:
                    if key in spared:
                        continue
                    if updated_at >= cutoff and remaining <= max_count:
                        stop = True
                        break
                    doomed.append((key, session_id, updated_at))
                    remaining -= 1
                if stop or len(rows) < _PRUNE_BATCH:
                    break
                after = (rows[-1]["updated_at"], rows[-1]["key"])
            deleted = 0
            for start in range(0, len(doomed), _PRUNE_BATCH):
                batch = doomed[start : start + _PRUNE_BATCH]
                deleted += await _delete_unchanged(conn, batch)
            return deleted

    async def count(self) -> int:
        async with self._conn() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM oc_sessions"))

    # --- stored responses ----------------------------------------------------------------------

    async def save_response(self, response: StoredResponse, *, previous: str | None) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO oc_responses ({_RESPONSE_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner,"
                " agent_id = excluded.agent_id, session_key = excluded.session_key,"
                " run_id = excluded.run_id, created_at = excluded.created_at,"
                " used_at = excluded.used_at, body = excluded.body,"
                " input_items = excluded.input_items",
                response.id,
                response.owner,
                response.agent_id,
                response.session_key,
                response.run_id,
                response.created_at,
                response.used_at,
                response.body,
                response.input_items,
            )
            if previous is not None:
                await conn.execute(
                    "UPDATE oc_responses SET used_at = $1 WHERE id = $2",
                    response.created_at,
                    previous,
                )

    async def get_response(self, response_id: str) -> StoredResponse | None:
        if "\x00" in response_id:
            return None  # could not have been stored (PostgreSQL text holds no NUL)
        row = await self._fetchrow(
            f"SELECT {_RESPONSE_COLUMNS} FROM oc_responses WHERE id = $1", response_id
        )
        return None if row is None else _stored(row)

    async def delete_response(self, response_id: str) -> bool:
        if "\x00" in response_id:
            return False
        async with self._conn() as conn, conn.transaction():
            key = await conn.fetchval(
                "DELETE FROM oc_responses WHERE id = $1 RETURNING session_key", response_id
            )
            if key is None:
                return False
            await _drop_if_orphaned(conn, key)
            return True

    async def prune_responses(self, *, max_age_seconds: float) -> int:
        cutoff = self._clock() - max_age_seconds
        count = 0
        async with self._conn() as conn:
            while True:
                async with conn.transaction():
                    rows = await conn.fetch(
                        "DELETE FROM oc_responses WHERE id IN (SELECT id FROM oc_responses"
                        " WHERE used_at < $1 ORDER BY used_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
                        " RETURNING session_key",
                        cutoff,
                        _PRUNE_BATCH,
                    )
                    for key in {row["session_key"] for row in rows}:
                        await _drop_if_orphaned(conn, key)
                count += len(rows)
                if len(rows) < _PRUNE_BATCH:
                    return count

    # --- internals -----------------------------------------------------------------------------

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("session store is not open")
        return self._pool

    def _conn(self) -> _Acquired:
        return _Acquired(self._open_pool(), self._connect_timeout)

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._conn() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args)
            return row

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._conn() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def _write(self, turns: list[Turn]) -> list[BaseException | None]:
        """A batch of turns in one transaction; each under a savepoint when there are several."""
        now = self._clock()
        async with self._conn() as conn:
            if len(turns) == 1:
                await _write_turn(conn, turns[0], now)  # one statement: its own transaction
                return [None]
            async with conn.transaction():
                return await _write_each(conn, turns, now)


class _Acquired:
    """A pooled connection for one call; failures to get one or to use it are storage errors
    (``StoreUnavailableError``), raised once, logged once."""

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            # Bounded: when every connection is stuck on a server that does not answer, a
            # request fails with 503 instead of queueing behind them.
            self._conn = await self._pool.acquire(timeout=self._timeout)
        except STORAGE_ERRORS as exc:
            raise store_error(exc) from exc
        conn: asyncpg.Connection = self._conn
        return conn

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        await self._pool.release(self._conn)
        if exc is not None and isinstance(exc, STORAGE_ERRORS):
            raise store_error(exc) from exc


async def connect(url: str, *, connect_timeout: float) -> asyncpg.Connection:
    """One connection, outside the pool (migrations, the CLI)."""
    conn: asyncpg.Connection = await asyncpg.connect(url, timeout=connect_timeout)
    return conn


async def insert_entry(conn: asyncpg.Connection, entry: SessionEntry) -> bool:
    """Insert ``entry``'s row as it is (totals, times, record count) unless its key exists;
    whether it was inserted."""
    made = await conn.fetchval(
        f"INSERT INTO oc_sessions ({_COLUMNS}, records)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (key) DO NOTHING RETURNING session_id",
        entry.key,
        entry.session_id,
        entry.agent_id,
        entry.created_at,
        entry.updated_at,
        entry.model,
        entry.prompt_tokens,
        entry.completion_tokens,
        entry.ephemeral,
        entry.turns,
        entry.records or 0,
    )
    return made is not None


async def _get_or_insert(
    conn: asyncpg.Connection, key: str, agent_id: str, ephemeral: bool, now: float
) -> SessionEntry:
    row = await conn.fetchrow(
        f"INSERT INTO oc_sessions ({_COLUMNS}) VALUES ($1, $2, $3, $4, $4, NULL, 0, 0, $5, 0)"
        f" ON CONFLICT (key) DO NOTHING RETURNING {_COLUMNS}, records",
        key,
        uuid7_str(),
        agent_id,
        now,
        ephemeral,
    )
    if row is None:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS}, records FROM oc_sessions WHERE key = $1", key
        )
    if row is None:  # deleted between the two statements: ours to make again
        return await _get_or_insert(conn, key, agent_id, ephemeral, now)
    return _entry(row)


async def _tail(
    conn: asyncpg.Connection, entry: SessionEntry, max_records: int | None
) -> list[TranscriptRecord]:
    rows = await conn.fetch(_TAIL, entry.session_id, max_records)
    return _records(entry, [row["line"] for row in reversed(rows)])


def _records(entry: SessionEntry, lines: list[str]) -> list[TranscriptRecord]:
    where = Path("postgres", "oc_records", entry.session_id)  # named in warnings only
    out = []
    for line in lines:
        record = transcript.parse_line(line.encode(), where)
        if record is not None:
            out.append(record)
    return out


async def _write_turn(conn: asyncpg.Connection, turn: Turn, now: float) -> SessionEntry:
    """Bump (or create) the turn's session and append its records, in one statement.  A turn
    whose fence no longer matches (the session moved on since its run read it: the run's lease
    was lost) is refused whole."""
    usage = turn.usage or Usage()
    row = await conn.fetchrow(
        _WRITE_TURN,
        turn.key,
        uuid7_str(),
        turn.agent_id,
        now,
        turn.model,
        usage.prompt_tokens,
        usage.completion_tokens,
        turn.ephemeral,
        _user_turns(turn),
        _lines(turn.records),
        turn.fence,
    )
    if row is None:
        log.error(
            "a turn was refused: its session changed during the run (the run's lease was lost)",
            extra={"session_key": turn.key},
        )
        raise StoreUnavailableError(
            "The session changed while this run was in progress; try again."
        )
    return _entry(row)


def _user_turns(turn: Turn) -> int:
    return sum(record.role == "user" for record in turn.records)


async def _write_each(
    conn: asyncpg.Connection, turns: list[Turn], now: float
) -> list[BaseException | None]:
    """Several turns in the caller's transaction, each under a savepoint: one that fails is
    undone alone (a connection failure fails the transaction, and with it all)."""
    results: list[BaseException | None] = []
    for turn in turns:
        try:
            async with conn.transaction():  # a savepoint
                await _write_turn(conn, turn, now)
            results.append(None)
        except (asyncpg.PostgresError, StoreUnavailableError) as exc:
            results.append(store_error(exc))
    return results


async def _delete_unchanged(conn: asyncpg.Connection, batch: list[tuple[str, str, float]]) -> int:
    """Delete the sessions in ``batch`` whose rows are as they were read; how many."""
    async with conn.transaction():
        gone = await conn.fetch(
            "DELETE FROM oc_sessions s USING unnest($1::text[], $2::text[],"
            " $3::double precision[]) AS d(key, session_id, updated_at)"
            " WHERE s.key = d.key AND s.session_id = d.session_id"
            " AND s.updated_at = d.updated_at RETURNING s.session_id",
            [k for k, _, _ in batch],
            [sid for _, sid, _ in batch],
            [u for _, _, u in batch],
        )
        if gone:
            await conn.execute(
                "DELETE FROM oc_records WHERE session_id = ANY($1::text[])",
                [row["session_id"] for row in gone],
            )
        return len(gone)


async def _drop_if_orphaned(conn: asyncpg.Connection, key: str) -> None:
    """Delete a per-response session no stored response continues any more."""
    session_id = await conn.fetchval(
        f"DELETE FROM oc_sessions s WHERE key = $1 AND ephemeral AND {_NOT_REFERENCED}"
        " RETURNING session_id",
        key,
    )
    if session_id is not None:
        await conn.execute("DELETE FROM oc_records WHERE session_id = $1", session_id)


if TYPE_CHECKING:

    def _conforms(store: PostgresSessionStore) -> SessionStore:
        return store
