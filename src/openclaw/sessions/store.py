"""The embedded session store: a SQLite index plus JSONL transcripts (``SqliteSessionStore``).

Layout under the state dir::

    sessions.sqlite                                  index (WAL; -wal/-shm files beside it)
    agents/<agentId>/sessions/<sessionId>.jsonl      one transcript per session

Each store owns one I/O thread; all SQLite and file I/O runs there, one job per call, so the
event loop never blocks and a call is never half-done by cancellation: cancelling the awaiting task
either drops a call that had not started or lets it finish in the background.

Durability: every write is one index transaction, and the JSONL lines it covers are written (with
``fsync``: synced) before it commits and stay locked until it has, so a failed commit cuts them
back off and no reader sees them early.  Once a write has returned (a ``record_turn`` future is
done), it survives a killed process (WAL, ``synchronous=NORMAL``); with ``fsync``
(``session.fsync``) it survives a power cut too.  I/O and SQLite failures reach callers as
``StoreUnavailableError``; the details are logged.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from openclaw.messages import Usage
from openclaw.sessions import transcript
from openclaw.sessions.base import SessionStore, Turn, log, store_error
from openclaw.sessions.commits import GroupCommit
from openclaw.sessions.index import DeletedSession, SessionIndex
from openclaw.sessions.keys import is_valid_key
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.sessions.responses import StoredResponse
from openclaw.sessions.tail_cache import TailCache
from openclaw.sessions.worker import IoThread
from openclaw.sessions.writes import Writes, check_key

__all__ = ["INDEX_FILENAME", "SessionStore", "SqliteSessionStore", "Turn"]

T = TypeVar("T")

INDEX_FILENAME = "sessions.sqlite"


class SqliteSessionStore:
    """The embedded store: SQLite index plus JSONL transcripts, shared safely between processes."""

    def __init__(
        self,
        state_dir: Path,
        *,
        fsync: bool = False,
        read_block_size: int = transcript.DEFAULT_BLOCK_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state_dir = Path(state_dir)
        self._fsync = fsync
        self._clock = clock
        self._worker: IoThread | None = None
        # I/O-thread only, both of them.
        self._index: SessionIndex | None = None
        self._tails = TailCache(block_size=read_block_size)
        self._writes = Writes(self._state_dir, self._idx, self._tails, fsync=fsync, clock=clock)
        self._commits = GroupCommit(
            lambda turns: self._io().submit(lambda: self._writes.turns(turns))
        )

    @property
    def state_dir(self) -> Path:
        """The directory holding the index and the transcripts."""
        return self._state_dir

    def transcript_path(self, entry: SessionEntry) -> Path:
        """Where ``entry``'s JSONL transcript lives (it may not exist yet)."""
        return transcript.transcript_path(self._state_dir, entry.agent_id, entry.session_id)

    async def __aenter__(self) -> SqliteSessionStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Start the worker thread and open (creating if needed) the index."""
        if self._worker is not None:
            raise RuntimeError("session store is already open")
        worker = IoThread("openclaw-sessions")
        try:
            await worker.submit(self._open_sync)
        except BaseException:
            # Queued behind the open job, so a connection it still makes gets closed too.
            worker.submit(self._close_sync)
            worker.stop()
            raise
        self._worker = worker

    async def close(self) -> None:
        """Close the index and stop the worker thread once the calls already queued are done."""
        await self._commits.drain()
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            await worker.submit(self._close_sync)
        finally:
            # The close job ran last, so the thread is idle and exits at once; no join needed.
            worker.stop()

    async def get(self, key: str) -> SessionEntry | None:
        """The session stored under ``key``, if any."""
        if not is_valid_key(key):
            return None  # could not have been stored
        return await self._run(lambda: self._idx().get(key))

    async def get_or_create(self, key: str, agent_id: str, *, ephemeral: bool) -> SessionEntry:
        """The session under ``key``, created when missing; ``key`` must be ``agent:<agent_id>:…``.

        An existing session is returned as stored, even if ``ephemeral`` differs.
        """
        fresh = self._writes.fresh(key, agent_id, ephemeral=ephemeral)
        return await self._run(lambda: self._idx().get_or_insert(fresh))

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
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return await self._run(
            lambda: self._idx().list_entries(
                agent_id, limit=limit, include_ephemeral=include_ephemeral, search=search
            )
        )

    async def read_history(
        self, entry: SessionEntry, *, max_records: int | None
    ) -> list[TranscriptRecord]:
        """The last ``max_records`` committed records of ``entry``'s session in order (None: all),
        read backwards from the end."""
        if max_records is not None and max_records < 0:
            raise ValueError("max_records must be >= 0")

        def job() -> list[TranscriptRecord]:
            # The row as it is now: ``entry`` may predate writes, which moved the committed end.
            row = self._idx().get(entry.key)
            if row is None or row.session_id != entry.session_id:
                return []  # deleted (or deleted and made anew): that session is gone
            return self._tail(row, max_records)

        return await self._run(job)

    async def append(
        self,
        entry: SessionEntry,
        records: Sequence[TranscriptRecord],
        *,
        model: str | None,
        usage: Usage | None,
    ) -> SessionEntry:
        """Append ``records`` as JSONL in one write and bump the index row, in one transaction;
        the updated entry.

        ``usage`` is added to the session's totals; ``model`` None keeps the old one.
        """
        if usage is not None and (usage.prompt_tokens < 0 or usage.completion_tokens < 0):
            raise ValueError("token counts must be >= 0")
        batch = tuple(records)  # the caller's sequence may change while we wait for the worker

        def job() -> SessionEntry:
            with self._writes.transaction() as write:
                # The committed length as it is now, under the write lock (``entry`` may be old).
                row = self._idx().get(entry.key)
                current = (
                    row
                    if row is not None and row.session_id == entry.session_id
                    else replace(entry, transcript_bytes=None)
                )
                return self._writes.turn(write, current, batch, model, usage)

        return await self._run(job)

    async def load(
        self, key: str, agent_id: str, *, max_records: int | None
    ) -> tuple[SessionEntry, list[TranscriptRecord]]:
        """The (non-ephemeral) session under ``key``, created if missing, and its last records."""
        fresh = self._writes.fresh(key, agent_id, ephemeral=False)

        def job() -> tuple[SessionEntry, list[TranscriptRecord]]:
            entry = self._idx().get_or_insert(fresh)
            return entry, self._tail(entry, max_records)

        return await self._run(job)

    def record_turn(self, turn: Turn) -> asyncio.Future[None]:
        """Queue ``turn``; the returned future is done once it is committed, or fails with
        ``StoreUnavailableError``.  No task and no timer per write: see ``GroupCommit``."""
        check_key(turn.key, turn.agent_id)
        self._io()  # refuses when closed
        return self._commits.add(turn)

    def _tail(self, entry: SessionEntry, max_records: int | None) -> list[TranscriptRecord]:
        if not entry.ephemeral:
            path = self.transcript_path(entry)
            # Always recorded for a stored session; 0 for a row made by hand without one.
            return self._tails.read(path, entry.transcript_bytes or 0, max_records)
        out = []
        # Each row holds a turn of one or more lines, so max_records rows always suffice.
        for row in self._idx().tail_lines(entry.session_id, max_records):
            for line in row.splitlines():
                record = transcript.parse_line(line, self.transcript_path(entry))
                if record is not None:
                    out.append(record)
        if max_records is not None:
            out = out[max(0, len(out) - max_records) :] if max_records > 0 else []
        return out

    async def delete(self, key: str) -> bool:
        """Delete a session and its transcript; False when there was none."""
        if not is_valid_key(key):
            return False

        def job() -> bool:
            deleted = self._idx().delete(key)
            if deleted is not None:
                self._remove_transcripts([deleted])
            return deleted is not None

        return await self._run(job)

    async def prune_ephemeral(
        self, *, max_age_seconds: float, max_count: int, in_use: Collection[str]
    ) -> int:
        """Delete ephemeral sessions idle longer than ``max_age_seconds`` and the oldest beyond
        ``max_count``, never one whose key is in ``in_use``; how many were deleted."""
        if max_count < 0:
            raise ValueError("max_count must be >= 0")
        spared = frozenset(in_use)  # the caller's set keeps changing on the loop thread

        def job() -> int:
            deleted = self._idx().prune_ephemeral(
                cutoff=self._clock() - max_age_seconds, max_count=max_count, in_use=spared
            )
            self._remove_transcripts(deleted)
            return len(deleted)

        return await self._run(job)

    async def count(self) -> int:
        """Number of stored sessions."""
        return await self._run(lambda: self._idx().count())

    # --- stored responses (the Responses API) ------------------------------------------------

    async def save_response(self, response: StoredResponse, *, previous: str | None) -> None:
        """Store a response (committed when this returns); ``previous``: the response it
        continues, whose retention starts again."""
        await self._run(lambda: self._idx().save_response(response, previous))

    async def get_response(self, response_id: str) -> StoredResponse | None:
        return await self._run(lambda: self._idx().responses.get(response_id))

    async def delete_response(self, response_id: str) -> bool:
        """Delete a response (and its per-response session once no response continues it);
        False when there was none."""

        def job() -> bool:
            found, session = self._idx().delete_response(response_id)
            if session is not None:
                self._remove_transcripts([session])
            return found

        return await self._run(job)

    async def prune_responses(self, *, max_age_seconds: float) -> int:
        """Delete responses unused for ``max_age_seconds`` and the per-response sessions left
        without one; how many responses were deleted."""

        def job() -> int:
            count, sessions = self._idx().prune_responses(self._clock() - max_age_seconds)
            self._remove_transcripts(sessions)
            return count

        return await self._run(job)

    # --- worker-thread side -------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        # The thread does not see this task's contextvars; copy them so log lines keep the
        # request id.
        ctx = contextvars.copy_context()
        try:
            return await self._io().submit(lambda: ctx.run(fn))
        except (OSError, sqlite3.Error) as exc:
            raise store_error(exc) from exc

    def _io(self) -> IoThread:
        if self._worker is None:
            raise RuntimeError("session store is not open")
        return self._worker

    def _idx(self) -> SessionIndex:
        if self._index is None:
            raise RuntimeError("session store is not open")
        return self._index

    def _open_sync(self) -> None:
        self._index = SessionIndex(
            self._state_dir / INDEX_FILENAME, fsync=self._fsync, transcript_size=self._file_size
        )

    def _file_size(self, agent_id: str, session_id: str) -> int:
        return transcript.file_size(self._state_dir, agent_id, session_id)

    def _close_sync(self) -> None:
        index, self._index = self._index, None
        if index is not None:
            index.close()

    def _remove_transcripts(self, deleted: Iterable[DeletedSession]) -> None:
        for session in deleted:
            try:
                path = transcript.transcript_path(
                    self._state_dir, session.agent_id, session.session_id
                )
                self._tails.forget(path)
                path.unlink(missing_ok=True)
            except (OSError, ValueError) as exc:
                # The row is gone already; a leftover file is only wasted space.
                log.warning(
                    "could not remove transcript",
                    extra={"session_key": session.key, "error": str(exc)},
                )


if TYPE_CHECKING:
    # mypy proves here that the embedded store satisfies the protocol.
    def _conforms(store: SqliteSessionStore) -> SessionStore:
        return store
