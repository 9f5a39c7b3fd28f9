"""The PostgreSQL store's tables, as numbered migrations applied at start-up.

Replicas starting at once take a transaction-level advisory lock first, so exactly one applies
a migration and the others find it done.  Each migration runs in its own transaction with the
row that records it: a failure leaves the database at the previous version.  A database newer
than this gateway knows is refused (an older replica must not write into a layout it does not
understand).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

# Any constant: the advisory-lock key of "someone is migrating this database" (one for the
# whole database: migrations of different schemas wait for each other, which costs nothing).
MIGRATION_LOCK = 0x6F70656E636C6177  # "openclaw"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "sessions, transcripts, stored responses, failed-auth counters",
        (
            # One row per session (the index); `records`: how many transcript rows it has, so a
            # writer numbers new rows without reading the last one.
            """
            CREATE TABLE oc_sessions (
                key TEXT PRIMARY KEY,
                session_id TEXT NOT NULL UNIQUE,
                agent_id TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                model TEXT,
                prompt_tokens BIGINT NOT NULL DEFAULT 0,
                completion_tokens BIGINT NOT NULL DEFAULT 0,
                ephemeral BOOLEAN NOT NULL,
                turns INTEGER,
                records BIGINT NOT NULL DEFAULT 0
            )
            """,
            "CREATE INDEX oc_sessions_agent_updated ON oc_sessions (agent_id, updated_at)",
            "CREATE INDEX oc_sessions_ephemeral_updated ON oc_sessions (ephemeral, updated_at)",
            # A row per transcript record, in order: the JSON line as the embedded store writes
            # it (text, not jsonb: stored and returned byte for byte, never re-encoded).
            """
            CREATE TABLE oc_records (
                session_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                line TEXT NOT NULL,
                PRIMARY KEY (session_id, seq)
            )
            """,
            """
            CREATE TABLE oc_responses (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                agent_id TEXT NOT NULL,
                session_key TEXT NOT NULL,
                run_id TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                used_at DOUBLE PRECISION NOT NULL,
                body BYTEA NOT NULL,
                input_items BYTEA NOT NULL
            )
            """,
            "CREATE INDEX oc_responses_used ON oc_responses (used_at)",
            "CREATE INDEX oc_responses_session ON oc_responses (session_key)",
            # Failed authentication attempts by client address, counted over every replica, and
            # the addresses locked out (wall-clock seconds: replicas' monotonic clocks differ).
            "CREATE TABLE oc_auth_failures (addr TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX oc_auth_failures_addr ON oc_auth_failures (addr, at)",
            """
            CREATE TABLE oc_auth_lockouts (
                addr TEXT PRIMARY KEY,
                until DOUBLE PRECISION NOT NULL
            )
            """,
        ),
    ),
)
LATEST = MIGRATIONS[-1].version

_LEDGER = """
    CREATE TABLE IF NOT EXISTS oc_schema_migrations (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at DOUBLE PRECISION NOT NULL
    )
"""


class SchemaTooNewError(RuntimeError):
    pass


class SchemaNotReadyError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    schema: str
    current: int  # 0: nothing applied
    latest: int
    pending: tuple[Migration, ...]


async def status(conn: asyncpg.Connection, schema: str) -> SchemaStatus:
    """What is applied in ``schema`` and what a migration would add (changes nothing)."""
    exists = await conn.fetchval(
        "SELECT to_regclass(format('%I.oc_schema_migrations', $1::text)) IS NOT NULL", schema
    )
    current = 0
    if exists:
        current = await conn.fetchval(
            f'SELECT COALESCE(MAX(version), 0) FROM "{schema}".oc_schema_migrations'
        )
    pending = tuple(m for m in MIGRATIONS if m.version > current)
    return SchemaStatus(schema, current, LATEST, pending)


async def require_current(conn: asyncpg.Connection, schema: str) -> None:
    """Refuse a database this gateway cannot read as it is (for commands that only read)."""
    now = await status(conn, schema)
    if now.current > now.latest:
        raise SchemaTooNewError(
            f"the database schema {schema!r} is at version {now.current}; this gateway knows "
            f"up to {now.latest}: upgrade the gateway"
        )
    if now.current < now.latest:
        raise SchemaNotReadyError(
            f"the database schema {schema!r} is at version {now.current} of {now.latest}: "
            "run `openclaw db migrate` (or start the gateway)"
        )


async def migrate(conn: asyncpg.Connection, schema: str) -> list[Migration]:
    """Apply what is missing in ``schema`` (created if needed), one migration per transaction,
    under the migration lock; the migrations applied (none when up to date).  A database already
    at this version is only read: a role without the right to create schemas or tables (given
    ones made beforehand by ``openclaw db migrate``) can run the gateway."""
    if (await status(conn, schema)).current == LATEST:
        return []
    applied: list[Migration] = []
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            await conn.execute(_LEDGER)
            current = await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM oc_schema_migrations"
            )
            if current > LATEST:
                raise SchemaTooNewError(
                    f"the database schema {schema!r} is at version {current}; this gateway "
                    f"knows up to {LATEST}: upgrade the gateway"
                )
            step = next((m for m in MIGRATIONS if m.version == current + 1), None)
            if step is None:
                return applied
            for statement in step.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO oc_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                step.version,
                step.name,
                time.time(),
            )
        applied.append(step)
