"""Session leases across replicas: a PostgreSQL session-level advisory lock per running
session, on a connection pinned for the run.

A run on a stored session takes its session's lock before it starts and gives it back once its
turn is committed (as the file-lock leases do on one machine).  PostgreSQL queues waiters for a
lock in arrival order, so no replica starves another; a replica that dies loses its connections
and with them its locks at once (or when the server notices the dead TCP connection), so a
killed holder never blocks a session for long.  Runs on other sessions never wait: each lock is
its own key.

Pinning costs one connection per run in progress: this pool is apart from the store's, sized
to the runs a replica admits at once (``agents.defaults.maxConcurrent``), and its connections
have no statement timeout (a run may wait its turn behind a long one).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import asyncpg

from openclaw.logs import get_logger
from openclaw.sessions.base import STORAGE_ERRORS, store_error

log = get_logger("sessions.lease")


def lock_key(schema: str, key: str) -> int:
    """The advisory-lock key (a signed 64-bit integer) of ``key`` in ``schema``."""
    digest = hashlib.blake2b(f"{schema}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresSessionLeases:
    def __init__(
        self, url: str, *, schema: str, max_held: int, connect_timeout: float = 5.0
    ) -> None:
        self._url = url
        self._schema = schema
        self._max_held = max_held
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._held: dict[str, Any] = {}
        self._releasing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=0,
                max_size=self._max_held,
                timeout=self._connect_timeout,
                server_settings={
                    "statement_timeout": "0",
                    "application_name": "openclaw-gateway-leases",
                    # A machine that vanishes without closing its connections: the server
                    # probes them, and drops their locks within about 25 s.
                    "tcp_keepalives_idle": "10",
                    "tcp_keepalives_interval": "5",
                    "tcp_keepalives_count": "3",
                },
            )
        except STORAGE_ERRORS as exc:
            raise store_error(exc) from exc

    async def aclose(self) -> None:
        """Close every connection; leases still held go with theirs (the server drops them)."""
        held, self._held = list(self._held.values()), {}
        for conn in held:
            self._releasing_task(self._drop(conn))
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def acquire(self, key: str) -> None:
        """Take ``key``'s lease, waiting in line behind other replicas' runs on it."""
        if self._pool is None:
            raise RuntimeError("session leases are not started")
        try:
            conn = await self._pool.acquire()
        except STORAGE_ERRORS as exc:
            raise store_error(exc) from exc
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", lock_key(self._schema, key))
        except BaseException as exc:
            # Cancelled while waiting (the client left) or the connection failed: the wait is
            # abandoned; a lock granted in between goes with the connection.
            self._releasing_task(self._drop(conn))
            if isinstance(exc, STORAGE_ERRORS):
                raise store_error(exc) from exc
            raise
        self._held[key] = conn

    def release(self, key: str) -> None:
        """Give ``key``'s lease back (in the background: the caller does not wait for it)."""
        conn = self._held.pop(key, None)
        if conn is not None:
            self._releasing_task(self._unlock(conn, key))

    def _releasing_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _unlock(self, conn: Any, key: str) -> None:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key(self._schema, key))
        except STORAGE_ERRORS as exc:
            log.warning("could not release a session lease", extra={"error": str(exc)})
            conn.terminate()  # the lock goes with the connection
        finally:
            await self._release(conn)

    async def _drop(self, conn: Any) -> None:
        conn.terminate()
        await self._release(conn)

    async def _release(self, conn: Any) -> None:
        if self._pool is not None:
            # A broken connection is discarded by the pool.
            with contextlib.suppress(*STORAGE_ERRORS):
                await self._pool.release(conn)
