"""The store (and session leases) a config asks for: the embedded one in the state dir, or the
shared PostgreSQL one (``session.store``).  The gateway and the CLI make theirs here."""

from __future__ import annotations

from pathlib import Path

from openclaw.config.schema import Config
from openclaw.sessions.base import Leases, SessionStore
from openclaw.sessions.lease import SessionLeases
from openclaw.sessions.postgres import PostgresSessionLeases, PostgresSessionStore, database_url
from openclaw.sessions.store import SqliteSessionStore


def make_store(config: Config, state_dir: Path, *, migrate: bool = True) -> SessionStore:
    """``migrate``: bring the shared store's schema up to date when opening (the gateway; a
    reading command passes False and is refused a database at another version)."""
    if config.session.store == "postgres":
        pg = config.session.postgres
        return PostgresSessionStore(
            database_url(pg),
            schema=pg.schema_name,
            pool_size=pg.pool_size,
            connect_timeout=pg.connect_timeout_seconds,
            statement_timeout=pg.statement_timeout_seconds,
            migrate=migrate,
        )
    return SqliteSessionStore(state_dir, fsync=config.session.fsync)


def make_leases(config: Config, state_dir: Path) -> Leases:
    """Runs on one session one at a time across processes: file locks in the state dir
    (workers on one machine), or advisory locks in the database (replicas: one connection for
    the uncontended ones, one more per run waiting on another replica, at most
    ``agents.defaults.maxConcurrent``)."""
    if config.session.store == "postgres":
        pg = config.session.postgres
        return PostgresSessionLeases(
            database_url(pg),
            schema=pg.schema_name,
            max_held=config.agents.defaults.max_concurrent,
            connect_timeout=pg.connect_timeout_seconds,
        )
    return SessionLeases(state_dir)
