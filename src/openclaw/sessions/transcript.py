"""Transcript files: one JSONL file per session, appended in whole lines and read from the tail.

Blocking functions: call them from a worker thread, never from the event loop.  POSIX only
(``flock``, ``pread``).  Writers and readers in any process coordinate through ``flock``.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from openclaw.logs import get_logger
from openclaw.sessions.models import TranscriptRecord

DEFAULT_BLOCK_SIZE = 64 * 1024

# Session ids and agent ids become path components; anything else could escape the state dir.
_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

log = get_logger("sessions.transcript")


def _lock(fd: int, exclusive: bool) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)


def transcript_path(state_dir: Path, agent_id: str, session_id: str) -> Path:
    """``<state_dir>/agents/<agent_id>/sessions/<session_id>.jsonl``."""
    for part in (agent_id, session_id):
        if not _SAFE_COMPONENT.fullmatch(part):
            raise ValueError(f"unsafe path component in session: {part!r}")
    return state_dir / "agents" / agent_id / "sessions" / f"{session_id}.jsonl"


def append_lines(path: Path, data: bytes, *, fsync: bool) -> tuple[int, int]:
    """Append complete ``\\n``-terminated lines in one write, under an exclusive flock; the file's
    size before and after.  (One-off appends; the store appends through ``AppendBatch``.)"""
    batch = AppendBatch(fsync=fsync)
    try:
        sizes = batch.append(path, data)
        batch.sync()
    except BaseException:
        batch.release(keep=False)
        raise
    batch.release(keep=True)
    return sizes


@dataclass(slots=True)
class _Held:
    fd: int
    start: int  # size when the batch took the lock
    size: int  # size after the batch's writes so far
    created: bool


class AppendBatch:
    """Appends to transcripts inside one index transaction.

    Each file stays under its exclusive flock from its first append until ``release``, so that a
    failed transaction can cut its lines back off (``release(keep=False)``) without touching
    lines another process wrote, and readers elsewhere never see lines the index has not
    committed.  The lock order is always: the index's write lock first, then files, so two
    processes cannot deadlock.  Not thread-safe: one batch belongs to one worker thread.
    """

    def __init__(self, *, fsync: bool) -> None:
        self._fsync = fsync
        self._held: dict[Path, _Held] = {}

    def append(self, path: Path, data: bytes) -> tuple[int, int]:
        """Write complete lines at the end of ``path``; its size before and after.

        If the file ends in a torn line (a crash mid-write), a ``\\n`` is written first so the
        torn bytes stay a line of their own and the new lines parse.  A failed write is cut
        back off before the error propagates: nothing half-written stays behind.
        """
        if not data:
            return (-1, -1)
        if not data.endswith(b"\n"):
            raise ValueError("data must end with a newline")
        held = self._held.get(path) or self._take(path)
        before = held.size
        if before and os.pread(held.fd, 1, before - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        try:
            # One write is the normal case; a short write (disk nearly full, signal) is
            # finished under the same lock, so no other writer can land inside our lines.
            while view:
                view = view[os.write(held.fd, view) :]
        except BaseException:
            self._cut(path, held, before)
            raise
        held.size = before + len(data)
        return before, held.size

    def mark(self) -> dict[Path, int]:
        """The current size of every file in the batch, for ``rewind``."""
        return {path: held.size for path, held in self._held.items()}

    def rewind(self, mark: dict[Path, int]) -> None:
        """Cut every file back to its size at ``mark`` (files taken since: to their start)."""
        for path, held in self._held.items():
            self._cut(path, held, mark.get(path, held.start))

    def sync(self) -> None:
        """With ``fsync``: the written lines (and new files' directory entries) reach the disk.
        Called before the index commits, so the index never points past what the disk holds."""
        if not self._fsync:
            return
        dirs: set[Path] = set()
        for path, held in self._held.items():
            if held.size != held.start:
                os.fsync(held.fd)
                if held.created:
                    dirs.add(path.parent)
        for directory in dirs:
            fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def release(self, *, keep: bool) -> None:
        """Unlock and close every file; ``keep=False`` first cuts each back to its start."""
        held, self._held = self._held, {}
        for path, h in held.items():
            if not keep:
                self._cut(path, h, h.start)
            try:
                _unlock(h.fd)
            finally:
                os.close(h.fd)

    def _take(self, path: Path) -> _Held:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        created = not path.exists()
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o644)
        try:
            _lock(fd, exclusive=True)
            # Read under the lock: another process may have just finished a line.
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        held = _Held(fd, size, size, created)
        self._held[path] = held
        return held

    @staticmethod
    def _cut(path: Path, held: _Held, size: int) -> None:
        """Truncate to ``size``.  A failure is logged, not raised: the caller is already failing
        with the error that matters, and there is no other way to take the lines back."""
        try:
            if held.size == size and os.fstat(held.fd).st_size == size:
                return
            os.ftruncate(held.fd, size)
        except OSError as exc:
            log.error(
                "could not cut back a failed transcript write",
                extra={"path": str(path), "error": str(exc)},
            )
            return
        held.size = size


def read_tail(
    path: Path, max_records: int | None, *, block_size: int = DEFAULT_BLOCK_SIZE
) -> list[TranscriptRecord]:
    """The last ``max_records`` parseable records in file order (None: all); [] if no file.

    Reads backwards in ``block_size`` chunks, so the cost follows the records asked for, not the
    file size.  Unparseable lines are logged and skipped.
    """
    if max_records is not None and max_records < 0:
        raise ValueError("max_records must be >= 0")
    if block_size <= 0:
        raise ValueError("block_size must be > 0")
    if max_records == 0:
        return []
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, after the unlock
    except FileNotFoundError:
        return []
    with f:
        # Shared lock: a concurrent writer's batch is either fully visible or not at all.
        _lock(f.fileno(), exclusive=False)
        try:
            if max_records is None:
                lines: Iterator[bytes] = reversed(f.read().split(b"\n"))
            else:
                lines = _lines_backwards(f.fileno(), block_size)
            newest_first: list[TranscriptRecord] = []
            for line in lines:
                record = parse_line(line, path)
                if record is not None:
                    newest_first.append(record)
                    if max_records is not None and len(newest_first) >= max_records:
                        break
        finally:
            _unlock(f.fileno())
    newest_first.reverse()
    return newest_first


def _lines_backwards(fd: int, block_size: int) -> Iterator[bytes]:
    """Every line of the file, last first (the piece after the final ``\\n`` included)."""
    pos = os.fstat(fd).st_size
    # Pieces of the line that continues to the left of the chunk read last, rightmost first;
    # kept as a list so a line spanning many blocks is joined once, not re-copied per block.
    partial: list[bytes] = []
    while pos > 0:
        size = min(block_size, pos)
        pos -= size
        chunk = os.pread(fd, size, pos)
        if len(chunk) != size:  # truncated under us (not by us: we hold a lock); give up cleanly
            return
        cut = chunk.rfind(b"\n")
        if cut < 0:
            partial.append(chunk)
            continue
        partial.append(chunk[cut + 1 :])
        yield b"".join(reversed(partial))
        pieces = chunk[:cut].split(b"\n")
        yield from reversed(pieces[1:])
        partial = [pieces[0]]
    yield b"".join(reversed(partial))


def parse_line(line: bytes, path: Path) -> TranscriptRecord | None:
    """One JSONL line as a record; None (and a warning) for a blank or torn line."""
    if not line.strip():
        return None
    try:
        data = orjson.loads(line)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return TranscriptRecord.from_dict(data)
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        log.warning(
            "skipping unreadable transcript line",
            extra={"path": str(path), "bytes": len(line), "error": str(exc)},
        )
        return None
