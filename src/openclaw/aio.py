"""Small asyncio helpers the standard library lacks."""

from __future__ import annotations

import asyncio


async def reap(task: asyncio.Task[object]) -> None:
    """Wait for ``task``, which the caller has just cancelled, to finish.

    ``suppress(CancelledError)`` around that wait would also swallow a cancellation aimed at
    the caller itself; this re-raises when the caller is being cancelled too.  The child's own
    exception, if it failed instead, is not the caller's concern here."""
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        pass
