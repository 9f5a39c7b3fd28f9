"""Writing turns, on the store's I/O thread.

A commit is one index transaction with the transcript appends it covers: the lines are written
(with ``fsync``: synced) before it commits and stay under their file locks until it ends, so a
failed commit cuts them back off; the tail cache learns them only once committed.  Several turns
in one commit are each undone alone when one fails (a savepoint, its lines cut back), unless
SQLite rolled back the whole transaction, which fails them all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from openclaw.ids import uuid7_str
from openclaw.messages import Usage
from openclaw.sessions import transcript
from openclaw.sessions.base import Turn, log, store_error
from openclaw.sessions.index import SessionIndex, bumped
from openclaw.sessions.keys import is_valid_key, parse_key
from openclaw.sessions.models import SessionEntry, TranscriptRecord
from openclaw.sessions.tail_cache import TailCache


class Writes:
    """The write side of ``SqliteSessionStore``; ``index`` gives the open index."""

    def __init__(
        self,
        state_dir: Path,
        index: Callable[[], SessionIndex],
        tails: TailCache,
        *,
        fsync: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state_dir = state_dir
        self._index = index
        self._tails = tails
        self._fsync = fsync
        self._clock = clock

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Write]:
        """One index transaction with the transcript appends it covers.  The lines
        are written (and synced, with ``fsync``) before the commit, and cut back off if the
        commit fails; the tail cache learns them only once committed."""
        write = _Write(transcript.AppendBatch(fsync=self._fsync), [])
        kept = False
        try:
            with self._index().transaction():
                yield write
                write.appends.sync()
            kept = True
        finally:
            write.appends.release(keep=kept)
        for path, before, after, records in write.learned:
            self._tails.learn(path, before, after, records)

    def turns(self, turns: list[Turn]) -> list[BaseException | None]:
        """Every turn in one transaction.  A turn that fails is undone alone (a
        savepoint for its rows, its lines cut back); a failed commit fails them all."""
        results: list[BaseException | None] = []
        if len(turns) == 1:
            # Alone in its transaction (the usual case when not under load): its failure is
            # the transaction's, no savepoint needed.
            with self.transaction() as write:
                self._new_turn(write, turns[0])
            return [None]
        with self.transaction() as write:
            for turn in turns:
                mark, learned = write.appends.mark(), len(write.learned)
                try:
                    with self._index().savepoint():
                        self._new_turn(write, turn)
                    results.append(None)
                except Exception as exc:
                    if not self._index().in_transaction:
                        # SQLite rolled back the whole transaction (disk full or I/O error
                        # while spilling pages): every turn in it fails, not just this one.
                        raise
                    write.appends.rewind(mark)
                    del write.learned[learned:]
                    results.append(store_error(exc))
        return results

    def _new_turn(self, write: _Write, turn: Turn) -> None:
        if turn.ephemeral and self._insert_new(turn, self._clock()):
            return
        entry = self._index().get_or_insert(
            self.fresh(turn.key, turn.agent_id, ephemeral=turn.ephemeral)
        )
        self.turn(write, entry, turn.records, turn.model, turn.usage)

    def turn(
        self,
        write: _Write,
        entry: SessionEntry,
        records: Sequence[TranscriptRecord],
        model: str | None,
        usage: Usage | None,
    ) -> SessionEntry:
        """In a transaction: append ``records``, bump the row; the updated entry."""
        data = _lines(records)
        if entry.ephemeral:
            # One row per turn (its JSONL lines together): half the inserts of a row per line.
            self._index().append_lines(entry.session_id, (data,))
            length = None
        elif not data:
            length = None  # nothing to write: the committed length stays
        else:
            path = transcript.transcript_path(self._state_dir, entry.agent_id, entry.session_id)
            before, length = write.appends.append(path, data, committed=entry.transcript_bytes)
            write.learned.append((path, before, length, tuple(records)))
        now = self._clock()
        prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        turns = _user_messages(records)
        updated = self._index().record_append(
            entry,
            now=now,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            transcript_bytes=length,
            turns=turns,
        )
        if updated is None:
            log.warning(
                "session key was re-created during the run; index row left unchanged",
                extra={"session_key": entry.key, "session_id": entry.session_id},
            )
            return bumped(entry, now, model, prompt, completion, length, turns)
        return updated

    def _insert_new(self, turn: Turn, now: float) -> bool:
        """A per-request session is new by construction: one row insert with its final totals
        and its lines, instead of look-up, insert, append and update.  False if the key exists."""
        usage = turn.usage or Usage()
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
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
            turns=_user_messages(turn.records),
        )
        if not self._index().insert_new(entry):
            return False
        self._index().insert_first_lines(entry.session_id, _lines(turn.records))
        return True

    def fresh(self, key: str, agent_id: str, *, ephemeral: bool) -> SessionEntry:
        check_key(key, agent_id)
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


# (path, size before, size after, records) of one JSONL append, for the tail cache.
_CacheUpdate = tuple[Path, int, int, tuple[TranscriptRecord, ...]]


@dataclass(frozen=True, slots=True)
class _Write:
    """One write transaction in progress: its transcript appends, and what the tail cache
    learns once it commits."""

    appends: transcript.AppendBatch
    learned: list[_CacheUpdate]


def _user_messages(records: Iterable[TranscriptRecord]) -> int:
    """The turns ``records`` add to a session: its user messages."""
    return sum(record.role == "user" for record in records)


def _lines(records: Iterable[TranscriptRecord]) -> bytes:
    return b"".join(record.to_json_bytes() for record in records)


def check_key(key: str, agent_id: str) -> None:
    if not is_valid_key(key):
        raise ValueError("invalid session key")
    parsed = parse_key(key)
    if parsed is None or parsed.agent_id != agent_id:
        raise ValueError(f"session key must have the form agent:{agent_id}:<rest>")
