"""Stored Responses API responses, in the session index's database (so they survive restarts and
are shared by every process on the state dir).

A row keeps the response object as it was answered, its input items, who may see it (``owner``:
the caller's credential identity) and which session continues it (``session_key``), so that
``previous_response_id`` carries a conversation on.  Rows are kept ``retentionDays`` after their
last use; a per-response (ephemeral) session lives as long as a response refers to it.

Blocking and not thread-safe, like ``SessionIndex``: used on the store's I/O thread only.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS responses (
        id TEXT PRIMARY KEY NOT NULL,
        owner TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        session_key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        used_at REAL NOT NULL,
        body BLOB NOT NULL,
        input_items BLOB NOT NULL
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS responses_used ON responses (used_at)",
    "CREATE INDEX IF NOT EXISTS responses_session ON responses (session_key)",
)
# Ephemeral sessions a stored response continues are not pruned with the other per-request ones.
REFERENCED_SESSIONS = "SELECT session_key FROM responses"

_COLUMNS = "id, owner, agent_id, session_key, run_id, created_at, used_at, body, input_items"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    owner: str
    agent_id: str
    session_key: str
    run_id: str  # the run whose turn this response is: where its conversation ends
    created_at: float
    used_at: float
    body: bytes  # the response object as answered (JSON)
    input_items: bytes  # its input items (a JSON array)


def _row(r: StoredResponse) -> tuple[object, ...]:
    return (
        r.id,
        r.owner,
        r.agent_id,
        r.session_key,
        r.run_id,
        r.created_at,
        r.used_at,
        r.body,
        r.input_items,
    )


def _stored(row: tuple[Any, ...]) -> StoredResponse:
    rid, owner, agent_id, key, run_id, created, used = row[:7]
    return StoredResponse(
        rid, owner, agent_id, key, run_id, created, used, bytes(row[7]), bytes(row[8])
    )


class ResponseTable:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def insert(self, response: StoredResponse) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _row(response),
        )

    def get(self, response_id: str) -> StoredResponse | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM responses WHERE id = ?", (response_id,)
        ).fetchone()
        return None if row is None else _stored(row)

    def touch(self, response_id: str, now: float) -> None:
        self._db.execute("UPDATE responses SET used_at = ? WHERE id = ?", (now, response_id))

    def delete(self, response_id: str) -> str | None:
        """Delete one response; the session key it continued, or None if there was none."""
        rows = self._db.execute(
            "DELETE FROM responses WHERE id = ? RETURNING session_key", (response_id,)
        ).fetchall()
        return str(rows[0][0]) if rows else None

    def expired(self, cutoff: float, limit: int) -> list[tuple[str, str]]:
        """(id, session key) of up to ``limit`` responses last used before ``cutoff``."""
        rows = self._db.execute(
            "SELECT id, session_key FROM responses WHERE used_at < ? ORDER BY used_at LIMIT ?",
            (cutoff, limit),
        ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    def referenced(self, session_key: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM responses WHERE session_key = ? LIMIT 1", (session_key,)
        ).fetchone()
        return row is not None
