"""Failed-auth attempts counted across gateway replicas, in the shared database: the same rule
as ``gateway.shared_failures`` (workers on one machine, SQLite) with the tables of the
PostgreSQL store, so N replicas do not allow N times the attempts.

Each replica keeps its in-memory ``FailureLimiter`` (every request's check stays local); each
failure is also counted in ``oc_auth_failures`` before the attempt is answered, an address over
the limit is locked out in ``oc_auth_lockouts``, and replicas pick up each other's lockouts
within ``REFRESH_SECONDS`` (at once when the address fails on them too: that attempt gets the
429).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg

from openclaw.config.schema import RateLimitConfig
from openclaw.logs import get_logger

log = get_logger("auth")

REFRESH_SECONDS = 0.5
Apply = Callable[[str, float], None]
T = TypeVar("T")


class PostgresFailures:
    def __init__(
        self,
        url: str,
        *,
        schema: str,
        cfg: RateLimitConfig,
        apply: Apply,
        connect_timeout: float = 5.0,
        statement_timeout: float = 30.0,
    ) -> None:
        self._url = url
        self._schema = schema
        self._max = cfg.max_attempts
        self._window = cfg.window_ms / 1000
        self._lockout = cfg.lockout_ms / 1000
        self._apply = apply
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._pool: asyncpg.Pool | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seen_until = 0.0

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._url,
            min_size=0,
            max_size=2,
            timeout=self._connect_timeout,
            command_timeout=self._statement_timeout,
            server_settings={
                "search_path": f'"{self._schema}"',
                "application_name": "openclaw-gateway-auth",
            },
        )
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._refresher
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def record(self, addr: str) -> float | None:
        """Count a failure of ``addr`` over all replicas; when another replica had locked it out
        already, the wall-clock time that lockout ends (this attempt is not counted).  A client
        that leaves does not cancel the count."""
        return await asyncio.shield(self._spawn(self._record(addr, time.time())))

    def forget(self, addr: str) -> None:
        """``addr`` authenticated: its failures no longer count (on any replica)."""
        self._spawn(self._forget(addr))

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _record(self, addr: str, now: float) -> float | None:
        if self._pool is None:
            return None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # One address's failures are counted one replica at a time.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", addr)
                locked = await conn.fetchval(
                    "SELECT until FROM oc_auth_lockouts WHERE addr = $1 AND until > $2", addr, now
                )
                if locked is not None:  # another replica locked it out: not counted again
                    self._apply(addr, float(locked))
                    return float(locked)
                # Every address's expired failures go (addresses seen once would stay for ever).
                await conn.execute(
                    "DELETE FROM oc_auth_failures WHERE at <= $1", now - self._window
                )
                await conn.execute(
                    "INSERT INTO oc_auth_failures (addr, at) VALUES ($1, $2)", addr, now
                )
                count, oldest = await conn.fetchrow(
                    "SELECT count(*), min(at) FROM oc_auth_failures WHERE addr = $1", addr
                )
                if count < self._max:
                    return None
                # As the local limiter: a zero lockout still blocks until the oldest failure
                # leaves the window.
                until = now + max(self._lockout, self._window - (now - float(oldest)), 0.001)
                await conn.execute("DELETE FROM oc_auth_failures WHERE addr = $1", addr)
                await conn.execute(
                    "INSERT INTO oc_auth_lockouts (addr, until) VALUES ($1, $2)"
                    " ON CONFLICT (addr) DO UPDATE SET"
                    " until = GREATEST(oc_auth_lockouts.until, excluded.until)",
                    addr,
                    until,
                )
                await conn.execute("DELETE FROM oc_auth_lockouts WHERE until <= $1", now)
            self._apply(addr, until)
        except Exception as exc:  # the local limit still holds; the shared count is best effort
            log.warning("could not count a failed attempt across replicas", exc_info=exc)
        return None

    async def _forget(self, addr: str) -> None:
        if self._pool is None:
            return
        try:
            async with self._pool.acquire() as conn:
                await conn.execute("DELETE FROM oc_auth_failures WHERE addr = $1", addr)
        except Exception as exc:
            log.warning("could not clear failed attempts across replicas", exc_info=exc)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            if self._pool is None:
                return
            try:
                async with self._pool.acquire() as conn:
                    rows = await conn.fetch(
                        "SELECT addr, until FROM oc_auth_lockouts WHERE until > $1", time.time()
                    )
                for addr, until in rows:
                    self._apply(addr, float(until))
            except Exception as exc:  # never stop propagating lockouts for one bad read
                log.warning("could not read lockouts of other replicas", exc_info=exc)
