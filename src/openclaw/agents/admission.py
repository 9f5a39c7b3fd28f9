"""What a run waits for before it starts: its session's turn (runs on one session go one at a
time, in arrival order) and a run slot (a bounded number at once, a bounded queue beyond)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from openclaw.errors import GatewayBusyError


class SessionLocks:
    """One FIFO lock per busy session key; idle keys hold no memory."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def busy(self) -> set[str]:
        return set(self._locks)


class Admission:
    """At most ``limit`` runs at once and ``queue`` waiting; beyond that the gateway is busy."""

    def __init__(self, limit: int, queue: int) -> None:
        self._sem = asyncio.Semaphore(limit)
        self._queue = queue
        self._waiting = 0

    async def acquire(self) -> None:
        if self._sem.locked() and self._waiting >= self._queue:
            raise GatewayBusyError("The gateway is busy; try again shortly.")
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1

    def release(self) -> None:
        self._sem.release()
