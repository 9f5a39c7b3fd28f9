"""Runs on one session go one at a time across processes too: gateway workers sharing a state
dir, and ``openclaw agent`` beside a running gateway.

A session's lease is a record lock on one byte of ``<state>/sessions.lock`` (the byte is picked
by hashing the key, so the file stays empty and no file exists per session). The kernel drops a
dead process's locks at once, so a killed holder never blocks a session. On Linux the locks are
open-file-description locks (``F_OFD_SETLK``): a classic POSIX lock belongs to the process and
goes when *any* descriptor of the file is closed (a tool reading the file would end every lease
of its worker); elsewhere, classic POSIX locks. Within a process
``SessionLocks`` already queues runs in order; only the run at the head of a process's queue
takes the lease, without blocking the event loop: a non-blocking attempt, then polls with a
growing delay.

The lock calls never wait, so on Linux they are made without releasing the GIL (libc's
``fcntl`` through ``ctypes.PyDLL``): ``fcntl.fcntl`` releases it around every call, and under
load the store's I/O thread takes it then, so each of a run's four lock calls cost the event
loop a wait for the GIL (measured against a busy thread: ~90 us a call, ~1 us without; a
stored-session run's lease was 8% of the event loop's time under load).

Fairness across processes: a process that waits for a lease marks it with a shared lock on the
byte after it. A process that holds a session and has more runs queued for it checks that mark
when its next run starts and, when another process is waiting, lets it in first (it waits longer
than that process's longest poll before trying), so no process starves another.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import hashlib
import os
import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path

from openclaw.paths import PRIVATE_FILE, make_private_dir

LEASE_FILE = "sessions.lock"
FIRST_POLL_SECONDS = 0.001
LONGEST_POLL_SECONDS = 0.02
# Longer than a waiting process's longest poll (jittered up to 1.5x): it gets the lease before
# this process retries (whose wait is jittered down to 0.5x).
GIVE_WAY_SECONDS = 4 * LONGEST_POLL_SECONDS


def lease_offset(key: str) -> int:
    """The lease's byte for ``key`` (even; the byte after it is the waiting mark)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 2) * 2


class SessionLeases:
    """Cross-process session leases in one lock file (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        make_private_dir(state_dir)
        self._fd = os.open(
            state_dir / LEASE_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE
        )
        # The byte of each lease held, so a release does not hash the key again.
        self._offsets: dict[str, int] = {}

    async def start(self) -> None:
        """Nothing to open beyond the file (``Leases`` protocol)."""

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # drops every lock this process holds in the file
            self._fd = -1

    async def acquire(self, key: str) -> None:
        """Take ``key``'s lease, waiting while another process holds it.  This process must not
        hold it already (POSIX locks do not count: the second take would be a no-op and the
        first release would end both)."""
        offset = lease_offset(key)
        waiting = self._others_waiting(offset)
        if not waiting and self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB, offset):
            self._offsets[key] = offset
            return
        marked = self._lock(fcntl.LOCK_SH | fcntl.LOCK_NB, offset + 1)
        delay = GIVE_WAY_SECONDS if waiting else FIRST_POLL_SECONDS
        try:
            while True:
                # Jitter keeps processes polling one lease from moving in lockstep.
                await asyncio.sleep(delay * (0.5 + random.random()))
                if self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB, offset):
                    self._offsets[key] = offset
                    return
                if not marked:
                    marked = self._lock(fcntl.LOCK_SH | fcntl.LOCK_NB, offset + 1)
                delay = min(delay * 2, LONGEST_POLL_SECONDS)
        finally:
            if marked:
                self._lock(fcntl.LOCK_UN, offset + 1)

    def release(self, key: str) -> None:
        offset = self._offsets.pop(key, None)
        if self._fd >= 0:
            self._lock(fcntl.LOCK_UN, lease_offset(key) if offset is None else offset)

    def _others_waiting(self, offset: int) -> bool:
        """Whether another process marks itself waiting for this lease."""
        if self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB, offset + 1):
            self._lock(fcntl.LOCK_UN, offset + 1)
            return False
        return True

    def _lock(self, how: int, start: int) -> bool:
        """One byte's lock: True when taken (or released), False when another process has it."""
        try:
            if _OFD_SETLK is None:
                fcntl.lockf(self._fd, how, 1, start, os.SEEK_SET)
            else:
                kind = _OFD_KINDS[how & ~fcntl.LOCK_NB]
                _ofd_setlk(self._fd, _FLOCK.pack(kind, os.SEEK_SET, start, 1, 0))
        except (BlockingIOError, PermissionError):
            return False
        return True


# ``struct flock`` on 64-bit Linux: l_type, l_whence (shorts), l_start, l_len (off_t), l_pid.
_FLOCK = struct.Struct("hhxxxxqqixxxx")
_OFD_SETLK: int | None = (
    getattr(fcntl, "F_OFD_SETLK", None)
    if sys.platform == "linux" and _FLOCK.size == 32 and struct.calcsize("P") == 8
    else None
)
_OFD_KINDS = {
    fcntl.LOCK_EX: fcntl.F_WRLCK,
    fcntl.LOCK_SH: fcntl.F_RDLCK,
    fcntl.LOCK_UN: fcntl.F_UNLCK,
}


def _fcntl_holding_gil() -> Callable[[int, bytes], None] | None:
    """``fcntl(fd, F_OFD_SETLK, flock)`` from libc, called without releasing the GIL (see the
    module docstring); None where libc cannot be reached so (``fcntl.fcntl`` then)."""
    if _OFD_SETLK is None:
        return None
    try:
        call = ctypes.PyDLL(None).fcntl
    except (OSError, AttributeError):
        return None
    cmd = _OFD_SETLK

    def setlk(fd: int, flock: bytes) -> None:
        if call(fd, cmd, flock) == -1:
            # Refused (another process has the byte) or an error: the same attempt once more
            # through ``fcntl.fcntl``, which raises the OSError of the errno (BlockingIOError
            # when refused).  Repeating a non-blocking attempt is just another attempt.
            fcntl.fcntl(fd, cmd, flock)

    return setlk


def _fcntl_releasing_gil(fd: int, flock: bytes) -> None:
    assert _OFD_SETLK is not None
    fcntl.fcntl(fd, _OFD_SETLK, flock)


_ofd_setlk: Callable[[int, bytes], None] = _fcntl_holding_gil() or _fcntl_releasing_gil
