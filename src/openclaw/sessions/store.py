"""The session store: the ``SessionStore`` protocol and its embedded SQLite + JSONL implementation.

Layout under the state dir::

    sessions.sqlite                                  index (WAL; -wal/-shm files beside it)
    agents/<agentId>/sessions/<sessionId>.jsonl      one transcript per session

Each store owns one worker thread; all SQLite and file I/O runs there, one job per call, so the
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
import contextlib
import contextvars
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from openclaw.errors import StoreUnavailableError
from openclaw.ids import uuid7_str
from openclaw.logs import get_logger
from openclaw.sessions import transcript
from openclaw.sessions.index import DeletedSession, SessionIndex, bumped
from openclaw.sessions.keys import is_valid_key, parse_key
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.sessions.worker import IoThread

T = TypeVar("T")

INDEX_FILENAME = "sessions.sqlite"
# Bounded in entries and records per entry; a run asks for the agent's history budget (100 + 8).
TAIL_CACHE_SESSIONS = 128
TAIL_CACHE_RECORDS = 128
# One commit holds every stored session's transcript it covers open and locked until it ends:
# bounded, so a burst cannot run the process out of file descriptors.
MAX_FILES_PER_COMMIT = 64
MAX_TURNS_PER_COMMIT = 1024

log = get_logger("sessions")


@dataclass(frozen=True, slots=True)
class Turn:
    """One run's transcript write: create ``key`` if missing, append, add usage."""

    key: str
    agent_id: str
    ephemeral: bool
    records: tuple[TranscriptRecord, ...]
    model: str | None
    usage: tuple[int, int] | None


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
        self, agent_id: str | None = None, *, limit: int = 100, include_ephemeral: bool = True
    ) -> list[SessionEntry]:
        """Up to ``limit`` sessions, most recently updated first."""

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
        usage: tuple[int, int] | None,
    ) -> SessionEntry:
        """Append records, add ``usage`` (prompt, completion) to the totals; the updated entry."""

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
        self._block_size = read_block_size
        self._clock = clock
        self._worker: IoThread | None = None
        self._index: SessionIndex | None = None  # only ever touched on the worker thread
        # Turns waiting to be written, and whether a write of earlier ones is in flight.
        self._turns: list[tuple[Turn, asyncio.Future[None]]] = []
        self._flushing = False
        self._in_flight: asyncio.Future[list[BaseException | None]] | None = None
        # Worker-thread only: path -> (file size, last records, whether that is all of them).
        self._tails: OrderedDict[Path, tuple[int, list[TranscriptRecord], bool]] = OrderedDict()

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
        while self._flushing or self._turns:
            waits: list[asyncio.Future[Any]] = [done for _, done in self._turns]
            if self._in_flight is not None:
                waits.append(self._in_flight)
            if waits:
                await asyncio.wait(waits)
            else:
                await asyncio.sleep(0)  # a write is about to start (call_soon)
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
        fresh = self._fresh(key, agent_id, ephemeral=ephemeral)
        return await self._run(lambda: self._idx().get_or_insert(fresh))

    async def list_sessions(
        self, agent_id: str | None = None, *, limit: int = 100, include_ephemeral: bool = True
    ) -> list[SessionEntry]:
        """Up to ``limit`` sessions, most recently updated first."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return await self._run(
            lambda: self._idx().list_entries(
                agent_id, limit=limit, include_ephemeral=include_ephemeral
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
        usage: tuple[int, int] | None,
    ) -> SessionEntry:
        """Append ``records`` as JSONL in one write and bump the index row, in one transaction;
        the updated entry.

        ``usage`` is (prompt_tokens, completion_tokens) to add; ``model`` None keeps the old one.
        """
        prompt_tokens, completion_tokens = usage or (0, 0)
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError("token counts must be >= 0")
        batch = tuple(records)  # the caller's sequence may change while we wait for the worker

        def job() -> SessionEntry:
            with self._writing() as write:
                # The committed length as it is now, under the write lock (``entry`` may be old).
                row = self._idx().get(entry.key)
                current = (
                    row
                    if row is not None and row.session_id == entry.session_id
                    else replace(entry, transcript_bytes=None)
                )
                return self._write_turn(write, current, batch, model, usage)

        return await self._run(job)

    async def load(
        self, key: str, agent_id: str, *, max_records: int | None
    ) -> tuple[SessionEntry, list[TranscriptRecord]]:
        """The (non-ephemeral) session under ``key``, created if missing, and its last records."""
        fresh = self._fresh(key, agent_id, ephemeral=False)

        def job() -> tuple[SessionEntry, list[TranscriptRecord]]:
            entry = self._idx().get_or_insert(fresh)
            return entry, self._tail(entry, max_records)

        return await self._run(job)

    def record_turn(self, turn: Turn) -> asyncio.Future[None]:
        """Queue ``turn``; the returned future is done once it is committed, or fails with
        ``StoreUnavailableError``.  No task and no timer per write: see ``_schedule``."""
        _check_key(turn.key, turn.agent_id)
        if self._worker is None:
            raise RuntimeError("session store is not open")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns.append((turn, done))
        self._schedule()
        return done

    def _schedule(self) -> None:
        """Start a write of the waiting turns at once unless one is in flight; when it ends, it
        starts the next with whatever gathered meanwhile (group commit: one thread hop and one
        commit for many turns under load, one commit's wait per run, no delay when idle).
        ``call_soon`` lets turns queued in the same loop iteration share the first one."""
        if self._flushing or not self._turns:
            return
        self._flushing = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        batch = self._take_batch()
        if not batch:
            self._flushing = False
            return
        assert self._worker is not None
        turns = [t for t, _ in batch]
        work = self._worker.submit(lambda: self._write_turns(turns))
        self._in_flight = work

        def finished(fut: asyncio.Future[list[BaseException | None]]) -> None:
            self._in_flight = None
            exc = fut.exception()
            results: list[BaseException | None] = (
                _failures(exc, len(batch)) if exc is not None else fut.result()
            )
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
        n = 0
        for n, (turn, _) in enumerate(self._turns):
            if n >= MAX_TURNS_PER_COMMIT:
                break
            if not turn.ephemeral and turn.key not in files:
                if len(files) >= MAX_FILES_PER_COMMIT:
                    break
                files.add(turn.key)
        else:
            n = len(self._turns)
        batch, self._turns = self._turns[:n], self._turns[n:]
        return batch

    @contextlib.contextmanager
    def _writing(self) -> Iterator[_Write]:
        """Worker side: one index transaction with the transcript appends it covers.  The lines
        are written (and synced, with ``fsync``) before the commit, and cut back off if the
        commit fails; the tail cache learns them only once committed."""
        write = _Write(transcript.AppendBatch(fsync=self._fsync), [])
        kept = False
        try:
            with self._idx().transaction():
                yield write
                write.appends.sync()
            kept = True
        finally:
            write.appends.release(keep=kept)
        for path, before, after, records in write.learned:
            self._cache_written(path, before, after, records)

    def _write_turns(self, turns: list[Turn]) -> list[BaseException | None]:
        """Worker side: every turn in one transaction.  A turn that fails is undone alone (a
        savepoint for its rows, its lines cut back); a failed commit fails them all."""
        results: list[BaseException | None] = []
        if len(turns) == 1:
            # Alone in its transaction (the usual case when not under load): its failure is
            # the transaction's, no savepoint needed.
            with self._writing() as write:
                self._write_new_turn(write, turns[0])
            return [None]
        with self._writing() as write:
            for turn in turns:
                mark, learned = write.appends.mark(), len(write.learned)
                try:
                    with self._idx().savepoint():
                        self._write_new_turn(write, turn)
                    results.append(None)
                except Exception as exc:
                    if not self._idx().in_transaction:
                        # SQLite rolled back the whole transaction (disk full or I/O error
                        # while spilling pages): every turn in it fails, not just this one.
                        raise
                    write.appends.rewind(mark)
                    del write.learned[learned:]
                    results.append(_store_error(exc))
        return results

    def _write_new_turn(self, write: _Write, turn: Turn) -> None:
        if turn.ephemeral and self._insert_new(turn, self._clock()):
            return
        entry = self._idx().get_or_insert(
            self._fresh(turn.key, turn.agent_id, ephemeral=turn.ephemeral)
        )
        self._write_turn(write, entry, turn.records, turn.model, turn.usage)

    def _write_turn(
        self,
        write: _Write,
        entry: SessionEntry,
        records: Sequence[TranscriptRecord],
        model: str | None,
        usage: tuple[int, int] | None,
    ) -> SessionEntry:
        """Worker side, in a transaction: append ``records``, bump the row; the updated entry."""
        data = _lines(records)
        if entry.ephemeral:
            # One row per turn (its JSONL lines together): half the inserts of a row per line.
            self._idx().append_lines(entry.session_id, (data,))
            length = None
        elif not data:
            length = None  # nothing to write: the committed length stays
        else:
            path = self.transcript_path(entry)
            before, length = write.appends.append(path, data, committed=entry.transcript_bytes)
            write.learned.append((path, before, length, tuple(records)))
        now = self._clock()
        prompt, completion = usage or (0, 0)
        updated = self._idx().record_append(
            entry,
            now=now,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            transcript_bytes=length,
        )
        if updated is None:
            log.warning(
                "session key was re-created during the run; index row left unchanged",
                extra={"session_key": entry.key, "session_id": entry.session_id},
            )
            return bumped(entry, now, model, prompt, completion, length)
        return updated

    def _insert_new(self, turn: Turn, now: float) -> bool:
        """A per-request session is new by construction: one row insert with its final totals
        and its lines, instead of look-up, insert, append and update.  False if the key exists."""
        prompt, completion = turn.usage or (0, 0)
        entry = SessionEntry(
            key=turn.key,
            session_id=uuid7_str(),
            agent_id=turn.agent_id,
            created_at=now,
            updated_at=now,
            model=turn.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            ephemeral=True,
        )
        if not self._idx().insert_new(entry):
            return False
        self._idx().insert_first_lines(entry.session_id, _lines(turn.records))
        return True

    def _cache_written(
        self, path: Path, before: int, after: int, records: Sequence[TranscriptRecord]
    ) -> None:
        cached = self._tails.pop(path, None)
        if cached is not None and cached[0] == before:
            # Nobody else wrote since we read: the cache stays exact with our records added.
            kept = [*cached[1], *records]
            whole = cached[2] and len(kept) <= TAIL_CACHE_RECORDS
            self._tails[path] = (after, kept[-TAIL_CACHE_RECORDS:], whole)

    def _cached_tail(self, path: Path, end: int, max_records: int | None) -> list[TranscriptRecord]:
        """The transcript's last records before its committed ``end``, parsed once and kept per
        session while that length stays the same; a run re-reads nothing it already knows."""
        if end == 0:
            self._tails.pop(path, None)
            return []
        hit = self._tails.get(path)
        if (
            hit is not None
            and hit[0] == end
            and (hit[2] or (max_records is not None and max_records <= len(hit[1])))
        ):
            self._tails.move_to_end(path)
            records = hit[1]
        else:
            # Only what is asked: a run asks the same number each time, so later ones hit.
            want = max_records
            records, read = transcript.read_records(
                path, want, end=end, block_size=self._block_size
            )
            if read == end:  # a file shorter than its committed length is not remembered
                whole = want is None or len(records) < want
                self._tails[path] = (
                    end,
                    records[-TAIL_CACHE_RECORDS:],
                    whole and len(records) <= TAIL_CACHE_RECORDS,
                )
                if len(self._tails) > TAIL_CACHE_SESSIONS:
                    self._tails.popitem(last=False)
        if max_records is None:
            return list(records)
        return records[max(0, len(records) - max_records) :] if max_records else []

    def _tail(self, entry: SessionEntry, max_records: int | None) -> list[TranscriptRecord]:
        if not entry.ephemeral:
            path = self.transcript_path(entry)
            # Always recorded for a stored session; 0 for a row made by hand without one.
            return self._cached_tail(path, entry.transcript_bytes or 0, max_records)
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

    def _fresh(self, key: str, agent_id: str, *, ephemeral: bool) -> SessionEntry:
        _check_key(key, agent_id)
        now = self._clock()
        return SessionEntry(
            key=key,
            session_id=uuid7_str(),
            agent_id=agent_id,
            created_at=now,
            updated_at=now,
            model=None,
            prompt_tokens=0,
            completion_tokens=0,
            ephemeral=ephemeral,
            transcript_bytes=None if ephemeral else 0,
        )

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

    async def import_entries(self, entries: Iterable[SessionEntry]) -> int:
        """Insert index rows as given (keys already present are skipped), in one transaction;
        a stored session's committed transcript length is its transcript's size now.

        For migrations and benchmarks; transcripts are not touched.  How many were inserted.
        """
        given = list(entries)

        def job() -> int:
            rows = [
                e
                if e.ephemeral
                else replace(e, transcript_bytes=self._file_size(e.agent_id, e.session_id))
                for e in given
            ]
            return self._idx().insert_many(rows)

        return await self._run(job)

    # --- worker-thread side -------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        worker = self._worker
        if worker is None:
            raise RuntimeError("session store is not open")
        # The thread does not see this task's contextvars; copy them so log lines keep the
        # request id.
        ctx = contextvars.copy_context()
        try:
            return await worker.submit(lambda: ctx.run(fn))
        except (OSError, sqlite3.Error) as exc:
            raise _store_error(exc) from exc

    def _idx(self) -> SessionIndex:
        if self._index is None:
            raise RuntimeError("session store is not open")
        return self._index

    def _open_sync(self) -> None:
        self._index = SessionIndex(
            self._state_dir / INDEX_FILENAME, fsync=self._fsync, transcript_size=self._file_size
        )

    def _file_size(self, agent_id: str, session_id: str) -> int:
        """The size of a stored session's transcript now (0: none, or an unusable path)."""
        try:
            return transcript.transcript_path(self._state_dir, agent_id, session_id).stat().st_size
        except (OSError, ValueError):
            return 0

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
                self._tails.pop(path, None)
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


# (path, size before, size after, records) of one JSONL append, for the tail cache.
_CacheUpdate = tuple[Path, int, int, tuple[TranscriptRecord, ...]]


@dataclass(frozen=True, slots=True)
class _Write:
    """One write transaction in progress: its transcript appends, and what the tail cache
    learns once it commits."""

    appends: transcript.AppendBatch
    learned: list[_CacheUpdate]


def _lines(records: Iterable[TranscriptRecord]) -> bytes:
    return b"".join(record.to_json_bytes() for record in records)


def _failures(exc: BaseException, n: int) -> list[BaseException | None]:
    """``exc`` for each of ``n`` turns of a failed commit: logged once, one instance per turn
    (each awaiting task raises its own, so tracebacks do not pile up on one object)."""
    first = _store_error(exc)
    if not isinstance(first, StoreUnavailableError):
        return [first] * n
    out: list[BaseException | None] = [first]
    for _ in range(n - 1):
        err = StoreUnavailableError()
        err.__cause__ = exc
        out.append(err)
    return out


def _store_error(exc: BaseException) -> BaseException:
    """An I/O or SQLite failure as the client-facing ``StoreUnavailableError`` (the details are
    logged here, once); anything else (a bad key: a bug) unchanged."""
    if not isinstance(exc, OSError | sqlite3.Error):
        return exc
    log.error("session store failed", extra={"error": f"{type(exc).__name__}: {exc}"})
    err = StoreUnavailableError()
    err.__cause__ = exc
    return err


def _check_key(key: str, agent_id: str) -> None:
    if not is_valid_key(key):
        raise ValueError("invalid session key")
    parsed = parse_key(key)
    if parsed is None or parsed.agent_id != agent_id:
        raise ValueError(f"session key must have the form agent:{agent_id}:<rest>")
