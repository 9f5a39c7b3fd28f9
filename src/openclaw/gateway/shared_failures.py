"""Failed-auth attempts counted across gateway workers, so that N workers do not allow N times
the attempts.

Each worker keeps its own ``FailureLimiter`` (the check on every request stays in memory) and
also records every failure in ``<state>/auth-failures.sqlite``, on a thread of its own, before
the failed attempt is answered: the count there is over all workers, and an address over the
limit is locked out in the shared table too. Workers pick up each other's lockouts within
``REFRESH_SECONDS``, and at once when the address fails on them (that attempt gets the 429).
Times are wall-clock seconds: monotonic clocks differ per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from openclaw.config.schema import RateLimitConfig
from openclaw.logs import get_logger
from openclaw.paths import create_private_file, make_private_dir
from openclaw.sessions.worker import IoThread

log = get_logger("auth")

FILENAME = "auth-failures.sqlite"
REFRESH_SECONDS = 0.2
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS failures (addr TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS failures_addr ON failures (addr, at)",
    "CREATE TABLE IF NOT EXISTS lockouts (addr TEXT PRIMARY KEY, until REAL NOT NULL)",
)

# (address, locked until in wall-clock seconds) -> applied to the local limiter.
Apply = Callable[[str, float], None]


class SharedFailures:
    def __init__(self, state_dir: Path, cfg: RateLimitConfig, apply: Apply) -> None:
        self._path = state_dir / FILENAME
        self._max = cfg.max_attempts
        self._window = cfg.window_ms / 1000
        self._lockout = cfg.lockout_ms / 1000
        self._apply = apply
        self._io = IoThread("openclaw-auth-failures")
        self._db: sqlite3.Connection | None = None
        self._version = -1
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._io.submit(self._open)
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._refresher
        await self._io.submit(self._close)
        self._io.stop()

    async def record(self, addr: str) -> float | None:
        """Count a failure of ``addr`` over all workers; when another worker had locked it out
        already, the wall-clock time that lockout ends (this attempt is not counted)."""
        try:
            job = self._io.submit(lambda: self._record(addr, time.time()))
            prior, until = await asyncio.shield(job)  # a client that leaves does not skip it
        except Exception as exc:  # the local limit still holds; the shared count is best effort
            log.warning("could not count a failed attempt across workers", exc_info=exc)
            return None
        if until is not None:
            self._apply(addr, until)
        return until if prior else None

    def forget(self, addr: str) -> None:
        """``addr`` authenticated: its failures no longer count."""
        self._io.submit(lambda: self._forget(addr))

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                for addr, until in await self._io.submit(self._lockouts):
                    self._apply(addr, until)
            except Exception as exc:  # never stop propagating lockouts for one bad read
                log.warning("could not read lockouts of other workers", exc_info=exc)

    # --- on the thread ------------------------------------------------------------------------

    def _open(self) -> None:
        make_private_dir(self._path.parent)
        create_private_file(self._path)
        db = sqlite3.connect(self._path, timeout=5, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = OFF")  # counters: a power cut may forget a few
        for statement in _SCHEMA:
            db.execute(statement)
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _record(self, addr: str, now: float) -> tuple[bool, float | None]:
        """(locked out before this attempt, locked out until)."""
        db = self._db
        if db is None:
            return False, None
        with db:
            db.execute("BEGIN IMMEDIATE")
            locked = db.execute(
                "SELECT until FROM lockouts WHERE addr = ? AND until > ?", (addr, now)
            ).fetchone()
            if locked is not None:  # another worker locked it out: not counted again
                return True, float(locked[0])
            db.execute("DELETE FROM failures WHERE at <= ?", (now - self._window,))
            db.execute("INSERT INTO failures (addr, at) VALUES (?, ?)", (addr, now))
            (count,) = db.execute(
                "SELECT count(*) FROM failures WHERE addr = ?", (addr,)
            ).fetchone()
            if count < self._max:
                return False, None
            # As the local limiter: a zero lockout still blocks until the oldest failure
            # leaves the window.
            first = "SELECT min(at) FROM failures WHERE addr = ?"
            (oldest,) = db.execute(first, (addr,)).fetchone()
            until = now + max(self._lockout, self._window - (now - float(oldest)), 0.001)
            db.execute("DELETE FROM failures WHERE addr = ?", (addr,))
            db.execute(
                "INSERT INTO lockouts (addr, until) VALUES (?, ?) "
                "ON CONFLICT (addr) DO UPDATE SET until = max(until, excluded.until)",
                (addr, until),
            )
            db.execute("DELETE FROM lockouts WHERE until <= ?", (now,))
        return False, until

    def _forget(self, addr: str) -> None:
        if self._db is not None:
            self._db.execute("DELETE FROM failures WHERE addr = ?", (addr,))

    def _lockouts(self) -> list[tuple[str, float]]:
        db = self._db
        if db is None:
            return []
        (version,) = db.execute("PRAGMA data_version").fetchone()
        if version == self._version:
            return []  # nothing committed by another connection since the last look
        self._version = version
        rows = db.execute("SELECT addr, until FROM lockouts WHERE until > ?", (time.time(),))
        return [(str(a), float(u)) for a, u in rows]
