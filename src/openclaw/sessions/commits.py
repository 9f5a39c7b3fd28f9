"""Group commit, the event loop's side of a store's writes.

A turn handed to ``GroupCommit.add`` is written at once when no write is in flight; turns that
arrive while one is form the next write together.  So when idle a run waits for one commit, and
under load one thread hop and one transaction carry many turns; nobody waits on a timer.  A
turn that finds the store idle starts its write in the same step (deferring it by one
``call_soon`` cost an idle commit about 12 us, measured); the write after one that ends starts a
step later (``call_soon``), so that the turns finishing in that step join it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from openclaw.sessions.base import Turn, store_errors

R = TypeVar("R")

# One commit holds every stored session's transcript it covers open and locked until it ends:
# bounded, so a burst cannot run the process out of file descriptors.
MAX_FILES_PER_COMMIT = 64
MAX_TURNS_PER_COMMIT = 1024

# Starts writing a batch of turns in one transaction (on the store's I/O thread, or as a task
# for a database driver); the future says, per turn, None or the error it failed with.
StartWrite = Callable[[list[Turn]], "asyncio.Future[list[BaseException | None]]"]


class GroupCommit:
    """Batches of turns for ``start`` to write, one batch in flight at a time."""

    def __init__(self, start: StartWrite) -> None:
        self._start = start
        self._waiting: list[tuple[Turn, asyncio.Future[None]]] = []
        self._flushing = False
        self._in_flight: asyncio.Future[Any] | None = None

    def add(self, turn: Turn) -> asyncio.Future[None]:
        """Queue ``turn``; the future is done once it is committed (or failed)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((turn, done))
        self._schedule(now=True)
        return done

    async def drain(self) -> None:
        """Until every turn queued so far is written (or failed)."""
        while self._flushing or self._waiting:
            waits: list[asyncio.Future[Any]] = [done for _, done in self._waiting]
            if self._in_flight is not None:
                waits.append(self._in_flight)
            if waits:
                await asyncio.wait(waits)
            else:
                await asyncio.sleep(0)  # a write is about to start (call_soon)

    def _schedule(self, *, now: bool = False) -> None:
        """Start a write unless one is in flight (it starts the next when it ends): ``now``, or
        at the next step of the loop."""
        if self._flushing or not self._waiting:
            return
        self._flushing = True
        if now:
            self._flush()
        else:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        batch = self._take_batch()
        if not batch:
            self._flushing = False
            return
        try:
            work = self._start([turn for turn, _ in batch])
        except Exception as exc:
            # Refused before it started (the store is closing): these turns fail, the next
            # ones are tried on their own.
            for (_, done), err in zip(batch, store_errors(exc, len(batch)), strict=True):
                if err is not None and not done.done():
                    done.set_exception(err)
            self._flushing = False
            self._schedule()
            return
        self._in_flight = work

        def finished(fut: asyncio.Future[list[BaseException | None]]) -> None:
            self._in_flight = None
            exc = fut.exception()
            results = store_errors(exc, len(batch)) if exc is not None else fut.result()
            for (_, done), err in zip(batch, results, strict=True):
                if done.done():
                    continue
                if err is None:
                    done.set_result(None)
                else:
                    done.set_exception(err)
            self._flushing = False
            self._schedule()

        work.add_done_callback(finished)

    def _take_batch(self) -> list[tuple[Turn, asyncio.Future[None]]]:
        """The waiting turns, oldest first, up to the bounds of one commit."""
        files: set[str] = set()
        n = len(self._waiting)
        for i, (turn, _) in enumerate(self._waiting):
            if i >= MAX_TURNS_PER_COMMIT:
                n = i
                break
            if not turn.ephemeral and turn.key not in files:
                if len(files) >= MAX_FILES_PER_COMMIT:
                    n = i
                    break
                files.add(turn.key)
        batch, self._waiting = self._waiting[:n], self._waiting[n:]
        return batch
