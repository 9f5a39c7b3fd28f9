"""Real faults for the tests: a full disk (the file size limit, on this process or a child) and a
database held locked by another connection."""

from __future__ import annotations

import contextlib
import resource
import sqlite3
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_size_limit(limit: int, pid: int = 0) -> Iterator[None]:
    """Writes that would grow any file of process ``pid`` (0: this one) past ``limit`` bytes
    fail with EFBIG, after a short write up to the limit: what a full disk does.  (Python
    ignores SIGXFSZ, so the process is not killed.)"""
    old = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, old)


@contextlib.contextmanager
def index_locked(state_dir: Path) -> Iterator[None]:
    """Another connection holds the session index's write lock (as another process would)."""
    db = sqlite3.connect(state_dir / "sessions.sqlite", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
    finally:
        db.close()
