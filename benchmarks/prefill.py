"""Stored sessions for the stateful targets, written into a state dir before its gateway starts.

Also a script (``python benchmarks/prefill.py STATE_DIR --size N``): ``--compare REF`` runs it
with REF's ``src`` on ``PYTHONPATH`` (``prefill_with``), so the other commit's own store writes
its own on-disk format.  Hence ``openclaw`` is imported inside the functions, never at module
level, and only the store API every compared commit has is used: ``SqliteSessionStore``, ``get``,
``append`` and ``count``, plus the bulk import (``openclaw.sessions.bulk.import_entries``, or
the store's own ``import_entries`` in commits from before it moved).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import HISTORY_MESSAGES, PROMPT, PROVIDER, REPLY, UPSTREAM_MODEL, USER_POOL, bench_user

BATCH = 20_000  # index rows per import_entries call


async def prefill(state_dir: Path, size: int, *, seed_history: bool = True) -> int:
    """``size`` stored (non-ephemeral, so never pruned) sessions keyed as ``user`` requests are;
    the first ``USER_POOL`` (the ones the benchmark talks to) get a transcript of
    ``HISTORY_MESSAGES`` records, so every stateful request sees the same, full history budget
    from the first request on (a steady state, whatever the number of requests).  Returns the
    number of sessions stored."""
    from openclaw.sessions import SessionEntry, SqliteSessionStore, TranscriptRecord, user_key

    now = time.time()

    def rows(lo: int) -> list[Any]:
        return [
            SessionEntry(
                key=user_key("main", bench_user(i)),
                session_id=f"00000000-0000-4000-8000-{i:012d}",
                agent_id="main",
                created_at=now - i,
                updated_at=now - i,
                model=f"{PROVIDER}/{UPSTREAM_MODEL}",
                prompt_tokens=10,
                completion_tokens=5,
                ephemeral=False,
            )
            for i in range(lo, min(lo + BATCH, size))
        ]

    try:
        from openclaw.sessions.bulk import import_entries
    except ImportError:  # a commit from before the bulk tools: the store's own method
        import_entries = None
    for lo in range(0, size, BATCH) if import_entries is not None else ():
        import_entries(state_dir, rows(lo))
    async with SqliteSessionStore(state_dir) as store:
        for lo in range(0, size, BATCH) if import_entries is None else ():
            await store.import_entries(rows(lo))
        if seed_history:
            for i in range(min(USER_POOL, size)):
                entry = await store.get(user_key("main", bench_user(i)))
                assert entry is not None
                records = [
                    TranscriptRecord(
                        role="user" if k % 2 == 0 else "assistant",
                        content=PROMPT if k % 2 == 0 else REPLY,
                        timestamp=now,
                    )
                    for k in range(HISTORY_MESSAGES)
                ]
                await store.append(entry, records, model=None, usage=None)
        return await store.count()


async def count_sessions(state_dir: Path) -> int:
    """How many sessions the store in ``state_dir`` holds."""
    from openclaw.sessions import SqliteSessionStore

    async with SqliteSessionStore(state_dir) as store:
        return await store.count()


def prefill_with(source: Path, state_dir: Path, size: int) -> None:
    """``prefill`` in a child process that imports ``openclaw`` from the tree ``source``."""
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(state_dir), "--size", str(size)],
        env={**os.environ, "PYTHONPATH": str(source)},
        check=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--size", type=int, required=True, help="sessions to store")
    args = parser.parse_args()
    asyncio.run(prefill(args.state_dir, args.size))
