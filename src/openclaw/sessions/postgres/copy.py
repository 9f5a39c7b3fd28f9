"""``openclaw sessions migrate --from sqlite --to postgres``: an existing state dir's sessions,
transcripts and stored responses copied into the shared database.

Idempotent and resumable: a session already there with the same id and all its records is
left alone; one cut short by an interrupted copy gets the records it lacks; a key that holds
another session in the database (made there by a replica) is reported, never overwritten.  Each
session is copied in one transaction, so an interruption leaves whole sessions.  The end
compares record counts session by session.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg

from openclaw.sessions.models import SessionEntry
from openclaw.sessions.postgres import schema as migrations
from openclaw.sessions.postgres.store import insert_entry
from openclaw.sessions.store import INDEX_FILENAME, SqliteSessionStore

Progress = Callable[[int, int], None]


@dataclass
class CopyReport:
    copied: int = 0  # sessions written whole
    resumed: int = 0  # sessions that got the records an earlier copy had not written
    unchanged: int = 0  # already there, complete
    conflicts: list[str] = field(default_factory=list)  # keys holding another session there
    records: int = 0  # records written
    responses: int = 0  # stored responses written (those already there are kept)
    mismatched: list[str] = field(default_factory=list)  # counts that differ after the copy

    @property
    def ok(self) -> bool:
        return not self.conflicts and not self.mismatched


async def copy_sqlite_to_postgres(
    state_dir: Path,
    url: str,
    *,
    schema: str,
    connect_timeout: float = 5.0,
    progress: Progress | None = None,
) -> CopyReport:
    report = CopyReport()
    conn: asyncpg.Connection = await asyncpg.connect(
        url, timeout=connect_timeout, server_settings={"search_path": f'"{schema}"'}
    )
    try:
        await migrations.migrate(conn, schema)
        async with SqliteSessionStore(state_dir) as source:
            entries = await source.list_sessions(limit=2**62, include_ephemeral=True)
            for done, entry in enumerate(entries, 1):
                records = await source.read_history(entry, max_records=None)
                lines = [record.to_json_bytes()[:-1].decode() for record in records]
                await _copy_session(conn, entry, lines, report)
                if progress is not None:
                    progress(done, len(entries))
            report.responses = await _copy_responses(conn, state_dir / INDEX_FILENAME)
            await _verify(conn, source, entries, report)
    finally:
        await conn.close()
    return report


async def _copy_session(
    conn: asyncpg.Connection, entry: SessionEntry, lines: list[str], report: CopyReport
) -> None:
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT session_id, records FROM oc_sessions WHERE key = $1 FOR UPDATE", entry.key
        )
        if row is None:
            start = 0
            await insert_entry(conn, replace(entry, records=len(lines)))
            report.copied += 1
        elif row["session_id"] != entry.session_id or not await _same_prefix(
            conn, entry.session_id, lines, min(row["records"], len(lines))
        ):
            # Another session under the key, or the same one gone on differently in each store
            # (turns added on both sides since an earlier copy): reported, never merged.
            report.conflicts.append(entry.key)
            return
        elif row["records"] >= len(lines):
            report.unchanged += 1
            return
        else:
            start = row["records"]
            await conn.execute(
                "UPDATE oc_sessions SET records = $2, updated_at = $3, model = $4,"
                " prompt_tokens = $5, completion_tokens = $6, turns = $7 WHERE key = $1",
                entry.key,
                len(lines),
                entry.updated_at,
                entry.model,
                entry.prompt_tokens,
                entry.completion_tokens,
                entry.turns,
            )
            report.resumed += 1
        missing = lines[start:]
        if missing:
            await conn.execute(
                "INSERT INTO oc_records (session_id, seq, line) SELECT $1, $2 + ordinality - 1,"
                " line FROM unnest($3::text[]) WITH ORDINALITY AS t(line)",
                entry.session_id,
                start,
                missing,
            )
            report.records += len(missing)


def _stored_responses(index: Path) -> list[tuple[Any, ...]]:
    if not index.exists():
        return []
    # Read-only: the state dir's index is not changed by a copy.
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT id, owner, agent_id, session_key, run_id, created_at, used_at, body,"
            " input_items FROM responses"
        ).fetchall()
    finally:
        db.close()


async def _same_prefix(conn: asyncpg.Connection, session_id: str, lines: list[str], n: int) -> bool:
    """Whether the database's first ``n`` records of the session are the state dir's (checked
    by the last of them: records are appended, never changed)."""
    if n == 0:
        return True
    line = await conn.fetchval(
        "SELECT line FROM oc_records WHERE session_id = $1 AND seq = $2", session_id, n - 1
    )
    return bool(line == lines[n - 1])


async def _copy_responses(conn: asyncpg.Connection, index: Path) -> int:
    rows = await asyncio.to_thread(_stored_responses, index)
    written = 0
    for row in rows:
        status = await conn.execute(
            "INSERT INTO oc_responses (id, owner, agent_id, session_key, run_id, created_at,"
            " used_at, body, input_items) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (id) DO NOTHING",
            *row[:7],
            bytes(row[7]),
            bytes(row[8]),
        )
        written += status.endswith(" 1")
    return written


async def _verify(
    conn: asyncpg.Connection,
    source: SqliteSessionStore,
    entries: list[SessionEntry],
    report: CopyReport,
) -> None:
    """Every session copied holds as many records in the database as in the state dir."""
    conflicted = set(report.conflicts)
    for entry in entries:
        if entry.key in conflicted:
            continue
        expected = len(await source.read_history(entry, max_records=None))
        got = await conn.fetchval(
            "SELECT count(*) FROM oc_records WHERE session_id = $1", entry.session_id
        )
        if got < expected:
            report.mismatched.append(entry.key)
