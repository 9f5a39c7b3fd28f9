"""Transcript files: one JSONL file per session, appended in whole lines and read from the tail.

Blocking functions: call them from a worker thread, never from the event loop.  POSIX only
(``flock``, ``pread``).

The session index records how many bytes of each transcript are committed.  Writers append under
an exclusive ``flock``, inside an index transaction (index write lock first, then the file, so two
processes cannot deadlock); a write that does not commit is cut back off, and one that a crash
interrupted is cut off by the next writer.  Readers read up to the committed length, so they need
no lock: the bytes before it never change.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from openclaw.logs import get_logger
from openclaw.paths import PRIVATE_DIR, PRIVATE_FILE
from openclaw.sessions.models import TranscriptRecord

DEFAULT_BLOCK_SIZE = 64 * 1024
# How long a writer waits for a file another process holds (a writer holds it for one index
# transaction, bounded by the index's own busy timeout); then the write fails instead of hanging.
LOCK_TIMEOUT_SECONDS = 10.0

# Session ids and agent ids become path components; anything else could escape the state dir.
_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

log = get_logger("sessions.transcript")


def _lock(fd: int, *, timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
    """An exclusive ``flock`` with a bound: a stopped process holding the lock fails this call,
    with an ``OSError``, instead of hanging the store's only worker thread."""
    op = fcntl.LOCK_EX | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, op)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise BlockingIOError(
                    errno.EWOULDBLOCK, "transcript file is locked by another process"
                ) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)


def transcript_path(state_dir: Path, agent_id: str, session_id: str) -> Path:
    """``<state_dir>/agents/<agent_id>/sessions/<session_id>.jsonl``."""
    for part in (agent_id, session_id):
        if not _SAFE_COMPONENT.fullmatch(part):
            raise ValueError(f"unsafe path component in session: {part!r}")
    return state_dir / "agents" / agent_id / "sessions" / f"{session_id}.jsonl"


def file_size(state_dir: Path, agent_id: str, session_id: str) -> int:
    """The size of a stored session's transcript now (0: none, or an unusable path)."""
    try:
        return transcript_path(state_dir, agent_id, session_id).stat().st_size
    except (OSError, ValueError):
        return 0


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
    start: int  # size when the batch took the lock (after cutting off an uncommitted tail)
    size: int  # size after the batch's writes so far
    created: bool


@dataclass(slots=True)
class AppendBatch:
    """Appends to transcripts inside one index transaction.

    Each file stays under its exclusive flock from its first append until ``release``, so that a
    transaction that fails can cut its lines back off (``release(keep=False)``, or ``rewind`` for
    part of it).  Not thread-safe: one batch belongs to one worker thread.
    """

    fsync: bool
    _held: dict[Path, _Held] = field(default_factory=dict)
    _new_dirs: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        """How many files the batch holds open (and locked)."""
        return len(self._held)

    def append(self, path: Path, data: bytes, *, committed: int | None = None) -> tuple[int, int]:
        """Write complete lines at the end of ``path``; its size before and after.

        ``committed`` is the file's committed length: bytes beyond it (a write a crash cut short,
        before its transaction committed) are cut off first (None: the file as it is).  If the
        file then ends inside a line (damage, or a file shorter than its index says after a
        power cut without ``fsync``), a ``\\n`` is written first so the new lines parse.  A
        failed write is cut back off before the error propagates: nothing half-written stays.
        """
        if not data:
            return (-1, -1)
        if not data.endswith(b"\n"):
            raise ValueError("data must end with a newline")
        held = self._held.get(path)
        if held is None:
            held = self._take(path, committed)
            if held.size and os.pread(held.fd, 1, held.size - 1) != b"\n":
                data = b"\n" + data
        before = held.size
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
        """With ``fsync``: the written lines, and the directory entries of new files and
        directories, reach the disk.  Called before the index commits, so the index never
        counts bytes the disk does not hold."""
        if not self.fsync:
            return
        dirs: dict[Path, None] = {}
        for directory in self._new_dirs:
            dirs[directory] = None
            dirs[directory.parent] = None
        for path, held in self._held.items():
            if held.size != held.start:
                os.fsync(held.fd)
                if held.created:
                    dirs[path.parent] = None
        for directory in dirs:
            fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._new_dirs.clear()

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

    def _take(self, path: Path, committed: int | None) -> _Held:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        created = not path.exists()
        try:
            fd = os.open(path, flags, PRIVATE_FILE)
        except FileNotFoundError:
            self._make_dirs(path.parent)
            fd = os.open(path, flags, PRIVATE_FILE)
        try:
            _lock(fd)
            size = os.fstat(fd).st_size
            if committed is not None and size > committed:
                # Under the index's write lock and the file's: nobody else is writing, so this
                # is what a crash left between writing and committing.  It never counted.
                log.warning(
                    "cutting off an uncommitted transcript write",
                    extra={"path": str(path), "bytes": size - committed},
                )
                os.ftruncate(fd, committed)
                size = committed
            elif committed is not None and size < committed:
                log.warning(
                    "transcript is shorter than its committed length (lost in a power cut?)",
                    extra={"path": str(path), "missing_bytes": committed - size},
                )
        except BaseException:
            os.close(fd)
            raise
        held = _Held(fd, size, size, created)
        self._held[path] = held
        return held

    def _make_dirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            new.mkdir(mode=PRIVATE_DIR, exist_ok=True)
            self._new_dirs.append(new)

    @staticmethod
    def _cut(path: Path, held: _Held, size: int) -> None:
        """Truncate to ``size``.  A failure is logged, not raised: the caller is already failing
        with the error that matters, and the bytes beyond the committed length never count (the
        next writer cuts them off)."""
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
    path: Path,
    max_records: int | None,
    *,
    end: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> list[TranscriptRecord]:
    """The last ``max_records`` parseable records in file order (None: all); [] if no file."""
    return read_records(path, max_records, end=end, block_size=block_size)[0]


def read_records(
    path: Path,
    max_records: int | None,
    *,
    end: int | None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> tuple[list[TranscriptRecord], int]:
    """(the last ``max_records`` parseable records before byte ``end``, in file order (None:
    all); the length they were read up to, less than ``end`` if the file is shorter).  ``end``
    None: the whole file as it is now.  No lock: the bytes before a committed length never
    change.

    Reads backwards in ``block_size`` chunks, so the cost follows the records asked for, not the
    file size.  Unparseable lines are logged and skipped.
    """
    if max_records is not None and max_records < 0:
        raise ValueError("max_records must be >= 0")
    if block_size <= 0:
        raise ValueError("block_size must be > 0")
    try:
        f = open(path, "rb")  # noqa: SIM115 - a plain with below
    except FileNotFoundError:
        return [], 0
    with f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if end is not None and end > size:
            log.warning(
                "transcript is shorter than its committed length (lost in a power cut?)",
                extra={"path": str(path), "missing_bytes": end - size},
            )
        elif end is not None:
            size = end
        if max_records == 0:
            return [], size
        if max_records is None:
            lines: Iterator[bytes] = reversed(os.pread(fd, size, 0).split(b"\n"))
        else:
            lines = _lines_backwards(fd, size, block_size)
        newest_first: list[TranscriptRecord] = []
        for line in lines:
            record = parse_line(line, path)
            if record is not None:
                newest_first.append(record)
                if max_records is not None and len(newest_first) >= max_records:
                    break
    newest_first.reverse()
    return newest_first, size


def _lines_backwards(fd: int, end: int, block_size: int) -> Iterator[bytes]:
    """Every line before byte ``end``, last first (the piece after the final ``\\n`` included)."""
    pos = end
    # Pieces of the line that continues to the left of the chunk read last, rightmost first;
    # kept as a list so a line spanning many blocks is joined once, not re-copied per block.
    partial: list[bytes] = []
    while pos > 0:
        size = min(block_size, pos)
        pos -= size
        chunk = os.pread(fd, size, pos)
        if len(chunk) != size:  # truncated under us (a delete): give up cleanly
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
