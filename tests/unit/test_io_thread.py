"""IoThread: the session store's one I/O thread."""

from __future__ import annotations

import asyncio
import gc
import threading

import pytest

from openclaw.sessions.worker import IoThread


async def test_jobs_run_in_order_on_one_other_thread() -> None:
    worker = IoThread("t")
    try:
        seen: list[tuple[int, int]] = []
        results = await asyncio.gather(
            *(
                worker.submit(lambda i=i: seen.append((i, threading.get_ident())) or i)
                for i in range(50)
            )
        )
        assert results == list(range(50))
        assert [i for i, _ in seen] == list(range(50))
        assert len({t for _, t in seen}) == 1
        assert seen[0][1] != threading.get_ident()
    finally:
        worker.stop()


async def test_errors_reach_the_caller_even_those_a_future_cannot_hold() -> None:
    worker = IoThread("t")
    try:

        def fails() -> None:
            raise OSError("disk full")

        def stops() -> None:
            raise StopIteration

        with pytest.raises(OSError, match="disk full"):
            await worker.submit(fails)
        with pytest.raises(RuntimeError, match="StopIteration"):
            await worker.submit(stops)
        assert await worker.submit(lambda: 7) == 7  # still serving
    finally:
        worker.stop()


async def test_a_job_cancelled_before_it_starts_is_skipped() -> None:
    worker = IoThread("t")
    try:
        gate = threading.Event()
        ran: list[str] = []
        first = worker.submit(gate.wait)
        second = worker.submit(lambda: ran.append("second"))
        second.cancel()
        gate.set()
        await first
        await worker.submit(lambda: None)
        assert ran == []
    finally:
        worker.stop()


async def test_an_unreferenced_worker_ends_its_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    worker = IoThread("leak-check")
    await worker.submit(lambda: None)
    [thread] = [t for t in threading.enumerate() if t.ident not in before]
    del worker
    gc.collect()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
