"""Session leases across replicas: PostgreSQL session-level advisory locks, one key per session.

A run on a stored session takes its session's lock before it starts and gives it back once its
turn is committed (as the file-lock leases do on one machine); runs on other sessions never
wait: each lock is its own key.

Connections are the scarce thing (a server allows ~100 by default, and every replica's pools
count), so a replica holds its uncontended leases, the usual case, all on one connection: a
lock that is free is taken there with ``pg_try_advisory_lock`` (a statement, no wait).  Only a
run that finds its session held by another replica takes a connection of its own and waits on
it (``pg_advisory_lock``) in PostgreSQL's queue, first come first served, keeping that
connection until it gives the lease back.  So a replica needs one connection for its leases,
plus one per run that had to wait.

A replica that dies loses its connections and with them its locks at once (the server notices
a closed connection immediately; the lease connections ask for TCP keepalives, so a machine
that vanishes is noticed within about 25 s), so a dead holder never blocks a session for long.
If the shared connection itself breaks while the replica lives, the locks on it are gone: the
loss is logged, the runs holding them finish, and the next leases are taken on a new connection.
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

# Idle waiting connections are closed after this long (they are only needed under contention).
IDLE_SECONDS = 10.0
# A lock statement that does not wait (take if free, give back) answers within this, or the
# server is taken for gone: the connection is dropped and the run fails with 503, not a hang.
STATEMENT_SECONDS = 5.0
_SETTINGS = {
    "statement_timeout": "0",  # a run may wait its turn behind a long one
    "application_name": "openclaw-gateway-leases",
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


def lock_key(schema: str, key: str) -> int:
    """The advisory-lock key (a signed 64-bit integer) of ``key`` in ``schema``."""
    digest = hashlib.blake2b(f"{schema}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresSessionLeases:
    def __init__(
        self, url: str, *, schema: str, max_held: int, connect_timeout: float = 5.0
    ) -> None:
        """``max_held``: the most runs of this process that may wait for (then hold) a lease
        another replica held at the time, each on a connection of its own."""
        self._url = url
        self._schema = schema
        self._max_waiting = max_held
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._shared: Any = None  # the connection holding the uncontended leases
        self._shared_lock = asyncio.Lock()  # one statement at a time on it
        self._held: dict[str, Any] = {}  # key -> the connection holding its lock
        self._releasing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the pool of connections for runs that wait (none are made until needed)."""
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=0,
                max_size=self._max_waiting,
                timeout=self._connect_timeout,
                max_inactive_connection_lifetime=IDLE_SECONDS,
                server_settings=_SETTINGS,
            )
        except STORAGE_ERRORS as exc:
            raise store_error(exc) from exc

    async def aclose(self) -> None:
        """Close every connection; leases still held go with theirs (the server drops them)."""
        held, self._held = list(self._held.values()), {}
        for conn in held:
            if conn is not self._shared:
                self._background(self._drop(conn))
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.terminate()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def acquire(self, key: str) -> None:
        """Take ``key``'s lease: at once when it is free, else in line behind other replicas."""
        if self._pool is None:
            raise RuntimeError("session leases are not started")
        lock = lock_key(self._schema, key)
        await self._shared_lock.acquire()
        try:
            shared = await self._shared_connection()
        except BaseException as exc:
            self._shared_lock.release()
            if isinstance(exc, STORAGE_ERRORS):
                raise store_error(exc) from exc
            raise
        statement = asyncio.ensure_future(
            shared.fetchval("SELECT pg_try_advisory_lock($1)", lock, timeout=STATEMENT_SECONDS)
        )
        # The connection is this statement's until it ends, even if the run is cancelled
        # meanwhile (a second statement on it would fail).
        statement.add_done_callback(lambda _: self._shared_lock.release())
        try:
            taken = await asyncio.shield(statement)
        except asyncio.CancelledError:
            # The client left while the server was taking the lock: once it answers, give back
            # whatever was taken, or every other replica would find the session held for good.
            statement.add_done_callback(lambda done: self._give_back(done, shared, lock))
            raise
        except STORAGE_ERRORS as exc:
            self._shared_broken()
            raise store_error(exc) from exc
        if taken:
            self._held[key] = shared
            return
        self._held[key] = await self._wait(lock)

    def _give_back(self, done: asyncio.Future[Any], conn: Any, lock: int) -> None:
        if not done.cancelled() and done.exception() is None and done.result():
            self._background(self._unlock(conn, lock))

    async def _wait(self, lock: int) -> Any:
        """Wait in PostgreSQL's queue for ``lock`` on a connection of its own; that connection."""
        assert self._pool is not None
        try:
            conn = await self._pool.acquire(timeout=self._connect_timeout)
        except STORAGE_ERRORS as exc:
            raise store_error(exc) from exc
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", lock)
        except BaseException as exc:
            # Cancelled while waiting (the client left) or the connection failed: the wait is
            # abandoned; a lock granted in between goes with the connection.
            self._background(self._drop(conn))
            if isinstance(exc, STORAGE_ERRORS):
                raise store_error(exc) from exc
            raise
        return conn

    def release(self, key: str) -> None:
        """Give ``key``'s lease back (in the background: the caller does not wait for it)."""
        conn = self._held.pop(key, None)
        if conn is not None:
            self._background(self._unlock(conn, lock_key(self._schema, key)))

    async def _shared_connection(self) -> Any:
        if self._shared is None or self._shared.is_closed():
            self._shared = await asyncpg.connect(
                self._url, timeout=self._connect_timeout, server_settings=_SETTINGS
            )
        return self._shared

    def _shared_broken(self) -> None:
        lost = [key for key, conn in self._held.items() if conn is self._shared]
        if lost:
            log.warning(
                "the connection holding session leases broke; their runs go on unleased",
                extra={"leases": len(lost)},
            )
            for key in lost:
                del self._held[key]
        if self._shared is not None:
            self._shared.terminate()
            self._shared = None

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _unlock(self, conn: Any, lock: int) -> None:
        if conn is self._shared:
            try:
                async with self._shared_lock:
                    if conn is self._shared:  # not replaced meanwhile (its locks went with it)
                        await conn.execute(
                            "SELECT pg_advisory_unlock($1)", lock, timeout=STATEMENT_SECONDS
                        )
            except STORAGE_ERRORS as exc:
                log.warning("could not release a session lease", extra={"error": str(exc)})
                self._shared_broken()
            return
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock, timeout=STATEMENT_SECONDS)
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
