"""What every session store is: the ``SessionStore`` protocol the runner uses, the ``Turn`` it
writes, and how storage failures reach clients (``StoreUnavailableError``)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from openclaw.errors import StoreUnavailableError
from openclaw.logs import get_logger
from openclaw.messages import Usage
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.sessions.responses import StoredResponse

log = get_logger("sessions")


@dataclass(frozen=True, slots=True)
class Turn:
    """One run's transcript write: create ``key`` if missing, append, add usage."""

    key: str
    agent_id: str
    ephemeral: bool
    records: tuple[TranscriptRecord, ...]
    model: str | None
    usage: Usage | None
    # The session's record count the run read its history at (``SessionEntry.records``): a store
    # that counts records refuses the turn when the session has moved on since, which only
    # happens when the run's lease was lost (order is kept by refusing, never by interleaving).
    fence: int | None = None


class SessionStore(Protocol):
    """What the runner needs from a store; per-request calls must not slow down as it grows."""

    async def open(self) -> None:
        """Make the store usable (create files, connect)."""

    async def close(self) -> None:
        """Release everything; a closed store refuses further calls."""

    async def get(self, key: str) -> SessionEntry | None:
        """The session stored under ``key``, if any."""

    async def get_or_create(self, key: str, agent_id: str, *, ephemeral: bool) -> SessionEntry:
        """The session under ``key``, created with a new (UUIDv7) session id when missing."""

    async def list_sessions(
        self,
        agent_id: str | None = None,
        *,
        limit: int = 100,
        include_ephemeral: bool = True,
        search: str | None = None,
    ) -> list[SessionEntry]:
        """Up to ``limit`` sessions, most recently updated first (only those whose key
        contains ``search``, when given)."""

    async def read_history(
        self, entry: SessionEntry, *, max_records: int | None
    ) -> list[TranscriptRecord]:
        """The last ``max_records`` transcript records in order (None: all)."""

    async def append(
        self,
        entry: SessionEntry,
        records: Sequence[TranscriptRecord],
        *,
        model: str | None,
        usage: Usage | None,
    ) -> SessionEntry:
        """Append records, add ``usage`` to the totals; the updated entry."""

    async def load(
        self, key: str, agent_id: str, *, max_records: int | None
    ) -> tuple[SessionEntry, list[TranscriptRecord]]:
        """``get_or_create`` (non-ephemeral) and ``read_history`` in one call: a run's start."""

    def record_turn(self, turn: Turn) -> asyncio.Future[None]:
        """Queue a run's write (create the session if needed, append its records); the future
        is done once it is committed, or fails with ``StoreUnavailableError``.  Turns queued
        while a write is in flight share the next one (group commit)."""

    async def delete(self, key: str) -> bool:
        """Delete a session and its transcript; False when there was none."""

    async def prune_ephemeral(
        self, *, max_age_seconds: float, max_count: int, in_use: Collection[str]
    ) -> int:
        """Delete old and surplus ephemeral sessions not in ``in_use``; how many were deleted."""

    async def count(self) -> int:
        """Number of stored sessions."""

    async def save_response(self, response: StoredResponse, *, previous: str | None) -> None:
        """Store a Responses API response (committed on return); ``previous`` is marked used."""

    async def get_response(self, response_id: str) -> StoredResponse | None:
        """A stored response, if any."""

    async def delete_response(self, response_id: str) -> bool:
        """Delete a stored response; False when there was none."""

    async def prune_responses(self, *, max_age_seconds: float) -> int:
        """Delete responses unused for ``max_age_seconds``; how many."""


# What a store's storage can fail with: the disk, SQLite, or the PostgreSQL server and the
# connection to it (a restart, a dropped connection, a statement or connect timeout).
STORAGE_ERRORS = (
    OSError,
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection left in a broken state by a server that ended it
    TimeoutError,
)


class Leases(Protocol):
    """A session's turn across processes (workers on one state dir, or replicas on one
    database): taken before a run on a stored session starts, given back once its turn is
    committed."""

    async def start(self) -> None:
        """Make them usable (connect)."""

    async def aclose(self) -> None:
        """Release everything; leases still held are given up."""

    async def acquire(self, key: str) -> None:
        """Take ``key``'s lease, waiting while another process holds it."""

    def release(self, key: str) -> None:
        """Give it back (never waits)."""


def store_error(exc: BaseException) -> BaseException:
    """An I/O or database failure as the client-facing ``StoreUnavailableError`` (the details
    are logged here, once); anything else (a bad key: a bug) unchanged."""
    if not isinstance(exc, STORAGE_ERRORS):
        return exc
    log.error("session store failed", extra={"error": f"{type(exc).__name__}: {exc}"})
    err = StoreUnavailableError()
    err.__cause__ = exc
    return err


def store_errors(exc: BaseException, n: int) -> list[BaseException | None]:
    """``exc`` for each of ``n`` turns of a failed commit: logged once, one instance per turn
    (each awaiting task raises its own, so tracebacks do not pile up on one object)."""
    first = store_error(exc)
    if not isinstance(first, StoreUnavailableError):
        return [first] * n
    out: list[BaseException | None] = [first]
    for _ in range(n - 1):
        err = StoreUnavailableError()
        err.__cause__ = exc
        out.append(err)
    return out
