"""Bulk work on a state dir for tools (migrations, benchmarks), beside the store's request path.

Blocking: call from a tool, or from a worker thread; never from the gateway's event loop.  Safe
beside a running gateway (its own connection; SQLite serialises the writes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from openclaw.sessions import transcript
from openclaw.sessions.index import SessionIndex
from openclaw.sessions.models import SessionEntry
from openclaw.sessions.store import INDEX_FILENAME


def import_entries(state_dir: Path, entries: Iterable[SessionEntry]) -> int:
    """Insert index rows as given (keys already present are skipped), in one transaction; a
    stored session's committed transcript length is its transcript's size now (transcripts are
    not touched).  How many were inserted."""

    def size(agent_id: str, session_id: str) -> int:
        return transcript.file_size(state_dir, agent_id, session_id)

    index = SessionIndex(state_dir / INDEX_FILENAME, transcript_size=size)
    try:
        rows = [
            e if e.ephemeral else replace(e, transcript_bytes=size(e.agent_id, e.session_id))
            for e in entries
        ]
        return index.insert_many(rows)
    finally:
        index.close()
